#!/bin/sh
# fetch-tiktoken.sh DIR
#
# Puts OpenAI's BPE encodings into DIR, each checked against its SHA-256 (the digests tiktoken
# itself pins), so gpt-oss (openai_harmony) and vLLM never download them at start: a model
# container may have no network, and an unverified vocabulary would corrupt every token.
# TIKTOKEN_ENCODINGS_BASE=DIR makes them find these files.
set -eu
dir=$1
base=https://openaipublic.blob.core.windows.net/encodings
mkdir -p "$dir"
while read -r name sha; do
  curl -fsSL --retry 3 -o "$dir/$name.tiktoken" "$base/$name.tiktoken"
  echo "$sha  $dir/$name.tiktoken" | sha256sum -c -
done <<LIST
cl100k_base 223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7
o200k_base 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
LIST
