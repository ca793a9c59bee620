#!/usr/bin/env bash
# Puts every document of the evaluation sets (bench/eval/*.jsonl) into one folder.
# usage: bench/eval/get-documents.sh DEST   (the project's default is ./.cache/eval-docs)
# The PDFs come from Debian packages (apt-get download + dpkg-deb -x, nothing installed system-wide);
# the slide decks are built here from bench/eval/slides/*.md with PyMuPDF ($PYTHON, default the
# project's .venv python if present, else python3). Page numbers in the question files belong to the
# package versions pinned below; the script falls back to the archive's current version with a warning.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: get-documents.sh DEST}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/../../.venv/bin/python" ]; then PYTHON="$here/../../.venv/bin/python"; else PYTHON=python3; fi
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# package=version  path inside the package  (output name: the file's basename)
packaged=(
  "r-doc-pdf=4.2.2.20221110-2 usr/share/R/doc/manual/R-lang.pdf"
  "r-cran-rcpp=1.0.10-1 usr/lib/R/site-library/Rcpp/doc/Rcpp-FAQ.pdf"
  "r-cran-sandwich=3.0-2-1 usr/lib/R/site-library/sandwich/doc/sandwich.pdf"
  "r-doc-pdf=4.2.2.20221110-2 usr/share/R/doc/manual/R-admin.pdf"
  "texlive-lang-english=2022.20230122-1 usr/share/doc/texlive-doc/latex/lshort-english/lshort.pdf"
  "r-cran-zoo=1.8-11-1 usr/lib/R/site-library/zoo/doc/zoo-faq.pdf"
  "r-cran-zoo=1.8-11-1 usr/lib/R/site-library/zoo/doc/zoo.pdf"
)
# outline in bench/eval/slides/  output name
built=(
  "cluster-onboarding.md cluster-onboarding-slides.pdf"
  "security-awareness.md security-awareness-slides.pdf"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PACKAGE=VERSION into $work/PACKAGE (once)
  local spec=$1 pkg=${1%%=*}
  [ -d "$work/$pkg" ] && return 0
  (
    cd "$work"
    if ! apt-get download "$spec" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      if ! apt-get download "$spec" >/dev/null 2>&1; then
        echo "warning: $spec is not in the archive; taking the current $pkg (pages may differ)" >&2
        apt-get download "$pkg" >/dev/null
      fi
    fi
    dpkg-deb -x "$pkg"_*.deb "$pkg"
  )
}

for entry in "${packaged[@]}"; do
  read -r spec path <<<"$entry"
  name=$(basename "$path")
  [ -s "$dest/$name" ] && continue
  fetch "$spec"
  cp "$work/${spec%%=*}/$path" "$dest/$name"
done

for entry in "${built[@]}"; do
  read -r outline name <<<"$entry"
  [ -s "$dest/$name" ] && continue
  "$PYTHON" "$here/make_slides.py" "$here/slides/$outline" "$dest/$name"
done

if [ -f "$here/documents.sha256" ]; then
  (cd "$dest" && sha256sum --quiet -c "$here/documents.sha256" 2>/dev/null) ||
    echo "warning: some documents differ from the versions the questions were written on (see bench/eval/documents.sha256)" >&2
fi
echo "$dest"
