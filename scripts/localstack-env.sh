# Sourced: installs LocalStack (the S3 emulator the original design uses) from PyPI once, into
# ~/.cache/pageview/localstack, and sets $localstack_python to the Python that runs it. It
# needs Python >= 3.13 (pyenv's, when the system one is older). Recipe: ../shared/LOCALSTACK.md.
localstack_version=2026.3.0
localstack_dir="${PAGEVIEW_CACHE:-$HOME/.cache/pageview}/localstack"
localstack_python="$localstack_dir/bin/python"
if ! "$localstack_python" -c "import localstack.aws.components" 2>/dev/null; then
    base=""
    for candidate in python3.14 python3.13 python3 \
        "$(pyenv root 2>/dev/null)"/versions/3.1[3-9]*/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
            base="$candidate"
            break
        fi
    done
    if [ -z "$base" ]; then
        echo "LocalStack needs Python 3.13 or newer (it imports warnings.deprecated); none found (tried python3.14, python3.13, python3, pyenv)" >&2
        exit 1
    fi
    echo "== installing LocalStack $localstack_version into $localstack_dir (with $base)"
    rm -rf "$localstack_dir"
    "$base" -m venv "$localstack_dir"
    "$localstack_dir/bin/pip" install -q --disable-pip-version-check \
        "localstack-core[runtime]==$localstack_version" \
        'cbor2<6' 'pyopenssl<26' 'cryptography<47' service_identity
fi
