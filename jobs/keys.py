"""Every Redis key and stream name Phobos uses, in one place."""

JOBS_STREAM = "phobos:jobs"  # all jobs as submitted; every worker reads it through WORKER_GROUP
MODEL_JOBS_PREFIX = "phobos:jobs:model:"  # + model name: asks forwarded to the workers serving that model
WORKER_GROUP = "workers"
FENCE_PREFIX = "phobos:fence:"  # + jobs stream: hash entry id -> fencing token of its latest take
REPLY_STREAM_PREFIX = "phobos:replies:"  # + adapter id: reply events for that adapter
REPLY_GROUP = "adapter"  # the consumer group each adapter reads its reply stream through (acks once shown)
JOB_SEEN_PREFIX = "phobos:job:seen:"  # + job id: set once, so a redelivered event makes one job
BLOB_PREFIX = "phobos:blob:"  # + job id: an uploaded file's bytes, until the worker has read them
INGEST_PROGRESS_PREFIX = "phobos:ingest:"  # + scope key:doc id + :state|:chunks|:vectors: an ingest's saved slices
WORKERS_LIVE_KEY = "phobos:workers:live"  # sorted set: worker id -> when its heartbeat expires (unix ms)
WORKERS_INFO_KEY = "phobos:workers:info"  # hash: worker id -> its heartbeat (JSON: models served, ...)
DOC_PREFIX = "phobos:doc:"  # + scope key + ":" + doc id: a document's metadata (a JSON string, not a hash)
DOC_CHUNKS_PREFIX = "phobos:chunks:"  # + scope key + ":" + doc id: chunk texts (JSON list)
DOC_VECTORS_PREFIX = "phobos:vectors:"  # + scope key + ":" + doc id: float32 matrix bytes
SCOPE_DOCS_PREFIX = "phobos:scope:docs:"  # + scope key: set of doc ids
SCOPE_VERSION_PREFIX = "phobos:scope:version:"  # + scope key: counter bumped at each change of its documents
CHANNEL_THREADS_PREFIX = "phobos:channel:threads:"  # + channel scope key: set of its thread scope keys with documents
DM_SEARCH_PREFIX = "phobos:dm-search:"  # + platform:workspace: "on" where a DM question may search its channels
MEMBERSHIP_PREFIX = "phobos:membership:"  # + platform:workspace: an adapter's cache of who reads which channel
CONVERSATION_PREFIX = "phobos:conv:"  # + scope key: hash with the conversation's model, ...
MEMORY_PREFIX = "phobos:memory:"  # + scope key: list of the conversation's recent turns (JSON), oldest first
DEAD_STREAM = "phobos:dead"  # jobs that failed MAX_DELIVERIES times, for `phobos dlq`
QUEUE_DEPTH_KEY = "phobos:queue:depth"  # jobs queued or running (incremented on submit, decremented on ack)
USER_QUEUED_PREFIX = "phobos:queue:user:"  # + Job.sender_key: that sender's jobs queued or running
RATE_PREFIX = "phobos:rate:"  # + Job.sender_key: token bucket hash (tokens, at_ms)
POSTED_PREFIX = "phobos:posted:"  # + job id: set by the adapter once the job's answer is shown to the user
REPLY_MESSAGES_PREFIX = "phobos:reply:messages:"  # + job id: JSON of the platform messages showing its reply
INTERACTIONS_STREAM = "phobos:interactions"  # answered questions and their ratings (jobs/interactions.py)
SUPERVISED_KEY = "phobos:supervised"  # hash: host:pid:name -> state of a `phobos up` child (jobs/supervised.py)
# Adapter-owned keys (bot/): written and read by one adapter only, named here so every key is in one place.
DISCORD_SOURCE_LINKS_PREFIX = "phobos:discord:links:"  # + scope key: hash file name -> jump URL of its message
SLACK_PERMALINK_PREFIX = "phobos:slack:permalinks:"  # + scope key: hash file name -> permalink
SLACK_PANE_CONTEXT_PREFIX = "phobos:slack:pane:"  # + channel:thread_ts: JSON of an assistant pane thread's context
SLACK_PANE_TITLED_PREFIX = "phobos:slack:pane-titled:"  # + channel:thread_ts: set once the thread has its title

REPLY_STREAM_MAXLEN = 10_000  # reply streams are read live; old events are history only
JOB_SEEN_TTL_S = 7 * 24 * 3600
BLOB_TTL_S = 24 * 3600
DEAD_STREAM_MAXLEN = 10_000
USER_QUEUED_TTL_S = 24 * 3600  # a per-user counter left behind by a crash ages out
POSTED_TTL_S = 7 * 24 * 3600
REPLY_MESSAGES_TTL_S = 24 * 3600  # long enough to pick up an answer after an adapter restart


def reply_stream(adapter_id: str) -> str:
    return REPLY_STREAM_PREFIX + adapter_id


def model_stream(model: str) -> str:
    """The stream only the workers serving ``model`` read, in the same WORKER_GROUP."""
    return MODEL_JOBS_PREFIX + model


def dm_search(platform: str, workspace: str) -> str:
    """The switch saying DM questions may read ``workspace``'s channels (a Discord guild's /dm-search)."""
    return f"{DM_SEARCH_PREFIX}{platform}:{workspace}"
