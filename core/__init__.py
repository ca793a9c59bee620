"""The RAG engine: PDF -> pages -> chunks -> embeddings -> retrieval -> prompt -> generation.

Plain Python. Nothing here imports a chat SDK or a Redis client; ports are small Protocols.
"""
