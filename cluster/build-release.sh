#!/usr/bin/env bash
# Build the pinned release that cluster/aws.yaml and cluster/gcp.yaml mount on every node:
#   dist/igan-release/igan-<version>-py3-none-any.whl, constraints.txt, constraints-cloud.txt,
#   installers.sha256 (the SHA-256 every node checks the uv archive against before running it)
# Run from anywhere; it works in the repository root. Refuses to build from a commit that is not
# the tag v<version> unless IGAN_ALLOW_UNTAGGED=1 (for trying out changes on a dev cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

pinned=0.1.0   # the version the launcher YAMLs, the KubeRay manifests and the Dockerfile pin
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
if [ "$version" != "$pinned" ]; then
  echo "build-release: pyproject.toml says igan $version but cluster/ pins $pinned; update both" >&2
  exit 2
fi
if ! git describe --exact-match --tags HEAD 2>/dev/null | grep -qx "v$version"; then
  if [ "${IGAN_ALLOW_UNTAGGED:-0}" != 1 ]; then
    echo "build-release: HEAD is not tag v$version (set IGAN_ALLOW_UNTAGGED=1 to build anyway)" >&2
    exit 2
  fi
  echo "build-release: warning: building igan $version from untagged $(git rev-parse --short HEAD)" >&2
fi

# A placeholder hash would fail setup on every node, minutes into `ray up`: fail here instead.
if grep -q 'REPLACE-ME' cluster/installers.sha256; then
  echo "build-release: cluster/installers.sha256 still holds a placeholder; put the uv archive's SHA-256" \
       "there first (cluster/README.md, \"Image digests and installer hashes\")" >&2
  exit 2
fi

out=dist/igan-release
rm -rf "$out"
mkdir -p "$out"
python3 -m pip wheel --quiet --no-deps --wheel-dir "$out" .
cp constraints.txt cluster/constraints-cloud.txt cluster/installers.sha256 "$out"/
test -f "$out/igan-$version-py3-none-any.whl"
ls -l "$out"
