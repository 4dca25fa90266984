#!/usr/bin/env bash
# The inference tests against the wheel alone (issue 17): build the wheel from this checkout, install it with its
# runtime dependencies and the test tools below into a fresh venv, and run the test files listed in
# tests/wheel_tests.txt from a copy outside the checkout, so that `import dmdet_infer` is the installed wheel
# (tests/conftest.py stops the run otherwise). CI runs it after the main suite: bash tests/run_wheel_tests.sh
# PYTHON picks the interpreter (default python3); KEEP=1 keeps the work directory; extra arguments go to pytest.
set -euo pipefail
checkout="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
test_tools=("pytest>=8" "onnx>=1.16" "hypothesis>=6.100")  # onnx: tests/onnx_models.py; hypothesis: test_fuzz.py
work="$(mktemp -d "${TMPDIR:-/tmp}/dmdet-wheel.XXXXXX")"
if [[ "${KEEP:-}" == 1 ]]; then echo "work directory: $work"; else trap 'rm -rf "$work"' EXIT; fi
unset PYTHONPATH
export PYTHONNOUSERSITE=1
start=$SECONDS

# 1. The wheel, built from a copy of the checkout's files (tracked and not ignored) so no stale build/ slips in.
mkdir "$work/src"
git -C "$checkout" ls-files -z --cached --others --exclude-standard \
    | (cd "$checkout" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$work/src"
"$python" -m pip wheel -q --no-deps "$work/src" -w "$work/dist"
wheel=("$work"/dist/dmdet-*.whl)

# 2. A fresh venv: the wheel with its runtime dependencies, and the test tools; nothing from the checkout.
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "${wheel[0]}" "${test_tools[@]}"

# 3. The listed tests, their helpers and the example stack, copied next to each other outside the checkout.
mkdir -p "$work/run/tests"
tests=() deselect=()
while read -r line; do
    case "$line" in
        -*) deselect+=(--deselect "tests/${line#-}") ;;
        ?*) tests+=("$line") ;;
    esac
done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$checkout/tests/wheel_tests.txt")
for f in conftest.py onnx_models.py "${tests[@]}"; do cp "$checkout/tests/$f" "$work/run/tests/"; done
cp -r "$checkout/examples" "$work/run/"
cd "$work/run"
echo "wheel run: $(basename "${wheel[0]}") as $("$work/venv/bin/python" -c 'import dmdet_infer; print(dmdet_infer.__file__)'),"\
     "${#tests[@]} test files, setup $((SECONDS - start)) s"
DMDET_WHEEL_RUN="$checkout" "$work/venv/bin/python" -m pytest -q -ra -p no:cacheprovider "${tests[@]/#/tests/}" "${deselect[@]}" "$@"
echo "wheel run: $((SECONDS - start)) s in all"
