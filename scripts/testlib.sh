# shellcheck shell=bash disable=SC2034 # PT_* are read by the caller
# Shared by scripts/test and scripts/stress-tests: counting meson's and
# pytest's results, and running the integration tests the way CI does.
# Sourced, not run. Needs PY (a python3 with pytest) and JOBS set, and SKIPS
# (a file skip reasons are appended to).

# Counts meson's testlog.json: TAP subtests where a test printed TAP lines,
# else the test itself. A test that failed without a "not ok" line (crash,
# bad plan, sanitizer report at exit) counts one more failure.
count_meson() {
    "$PY" - "$1" <<'PYEOF'
import json, re, sys
passed = failed = 0
try:
    lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
except OSError:
    print(0, 0); sys.exit()
tap = re.compile(r"^(not )?ok\b(.*)$")
for line in lines:
    if not line.strip():
        continue
    t = json.loads(line)
    res = t.get("result", "")
    ok = res in ("OK", "EXPECTEDFAIL")
    if res == "SKIP":
        continue
    p = f = 0
    for out in (t.get("stdout") or t.get("stdo") or "").splitlines():
        m = tap.match(out)
        if not m:
            continue
        directive = m.group(2).upper()
        if "# SKIP" in directive or "# TODO" in directive:
            continue
        if m.group(1):
            f += 1
        else:
            p += 1
    if not ok and f == 0:
        f += 1
    if p == 0 and f == 0:
        p = 1
    passed += p
    failed += f
print(passed, failed)
PYEOF
}

# Counts pytest's junit XML files: a case with <failure> or <error> (also
# from a fixture's teardown) failed, one with <skipped> was skipped (its
# reason appended to $SKIPS, prefixed with STAGE), the rest passed. Prints
# "PASSED FAILED SKIPPED". A missing or broken file counts one failure.
count_junit() {
    "$PY" - "$SKIPS" "$@" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
skips_file, stage, files = sys.argv[1], sys.argv[2], sys.argv[3:]
cases = {}
reasons = {}
broken = 0
for f in files:
    try:
        root = ET.parse(f).getroot()
    except (OSError, ET.ParseError):
        broken += 1
        continue
    for tc in root.iter("testcase"):
        key = (tc.get("classname"), tc.get("name"))
        tags = {child.tag for child in tc}
        if tags & {"failure", "error"}:
            cases[key] = "failed"
        elif "skipped" in tags:
            cases.setdefault(key, "skipped")
            msg = tc.find("skipped").get("message", "") or "no reason given"
            reasons[key] = msg.replace("\n", " ")
        else:
            cases.setdefault(key, "passed")
with open(skips_file, "a", encoding="utf-8") as out:
    for key, why in sorted(reasons.items()):
        if cases[key] == "skipped":
            out.write("%s: %s::%s: %s\n" % (stage, key[0], key[1], why))
v = list(cases.values())
print(v.count("passed"), v.count("failed") + broken, v.count("skipped"))
PYEOF
}

# pytest_pass JUNIT_PREFIX LIMIT [pytest arguments...]: the tests not
# marked serial JOBS at a time (pytest-xdist; each test has its own ports and
# directory), then the serial ones alone, each run bounded by LIMIT seconds.
# Sets PT_PASSED, PT_FAILED, PT_SKIPPED (STAGE for the skip reasons: PT_STAGE).
pytest_pass() {
    local prefix=$1 limit=$2
    shift 2
    local rc1 rc2
    rm -f "$prefix-parallel.xml" "$prefix-serial.xml"
    timeout -k 10 "$limit" "$PY" -m pytest -q --tb=short -p no:cacheprovider -n "$JOBS" \
        -m "not serial" --junitxml="$prefix-parallel.xml" "$@"
    rc1=$?
    timeout -k 10 "$limit" "$PY" -m pytest -q --tb=short -p no:cacheprovider -m serial \
        --junitxml="$prefix-serial.xml" "$@"
    rc2=$?
    # 5: nothing collected (say, no serial test among those selected)
    local files=()
    [[ $rc1 -ne 5 ]] && files+=("$prefix-parallel.xml")
    [[ $rc2 -ne 5 ]] && files+=("$prefix-serial.xml")
    PT_PASSED=0 PT_FAILED=0 PT_SKIPPED=0
    [[ ${#files[@]} -eq 0 ]] && return
    local counts
    counts=$(count_junit "${PT_STAGE:-pytest}" "${files[@]}")
    read -r PT_PASSED PT_FAILED PT_SKIPPED <<<"$counts"
    if [[ ($rc1 -ne 0 && $rc1 -ne 5) || ($rc2 -ne 0 && $rc2 -ne 5) ]] && [[ $PT_FAILED -eq 0 ]]; then
        PT_FAILED=1
    fi
}
