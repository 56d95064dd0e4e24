#!/usr/bin/env python3
"""Generate deploy/seccomp-io_uring.json: Docker's default seccomp profile with
io_uring_setup, io_uring_enter and io_uring_register allowed.

Docker 25 and later dropped the three io_uring syscalls from the default
profile (they now fail with EPERM), which stops uring-chat at startup. The
shipped profile is Docker's default allow-list plus exactly those three calls,
so it is much narrower than --privileged or seccomp=unconfined.

Where the base profile comes from: moby's profiles/seccomp/default.json as
shipped by the Debian package golang-github-docker-docker-dev (same source
package as docker.io). If the file is not installed, this script fetches the
.deb with `apt-get download` and extracts it (no install, no root needed for
the extraction). Any other moby default.json can be given with --from.

Usage:
  deploy/gen-seccomp-profile.py [--from default.json] [-o OUT]
      write the io_uring-enabled profile (default OUT: stdout)
  deploy/gen-seccomp-profile.py --deny-io-uring --from PROFILE [-o OUT]
      write PROFILE with the three syscalls removed from every rule and
      explicitly denied with EPERM, i.e. what Docker 25+ does (used by
      scripts/docker-smoke.sh to prove the server's error path)
  deploy/gen-seccomp-profile.py --check PROFILE
      exit 0 if the three syscalls are unconditionally allowed, 1 otherwise
"""

import argparse
import bisect
import glob
import json
import os
import subprocess
import sys
import tempfile

IO_URING = ["io_uring_enter", "io_uring_register", "io_uring_setup"]
DEB_PACKAGE = "golang-github-docker-docker-dev"
DEB_PATH = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"
EPERM = 1


def load_default_profile(path):
    """Return (text, origin) of moby's default.json."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    if os.path.exists(DEB_PATH):
        with open(DEB_PATH, encoding="utf-8") as f:
            return f.read(), DEB_PATH
    # Not installed: fetch the .deb and extract only what we need.
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", DEB_PACKAGE], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        debs = glob.glob(os.path.join(tmp, DEB_PACKAGE + "_*.deb"))
        if not debs:
            sys.exit("gen-seccomp-profile: apt-get download produced no .deb")
        root = os.path.join(tmp, "x")
        subprocess.run(["dpkg-deb", "-x", debs[0], root], check=True)
        with open(root + DEB_PATH, encoding="utf-8") as f:
            return f.read(), os.path.basename(debs[0]) + ":" + DEB_PATH


def is_unconditional(rule):
    """True for a rule that applies on every arch, with any caps and args."""
    return not rule.get("args") and not rule.get("includes") and not rule.get("excludes")


def allow_io_uring(profile):
    rules = profile["syscalls"]
    # Drop any rule that would deny or condition the io_uring calls...
    for rule in rules:
        if rule["action"] != "SCMP_ACT_ALLOW" or not is_unconditional(rule):
            rule["names"] = [n for n in rule["names"] if n not in IO_URING]
    profile["syscalls"] = rules = [r for r in rules if r["names"]]
    # ...and put them in the main unconditional allow-list (the first one, as
    # in moby's layout). Existing order is kept (upstream's list is only
    # roughly sorted); missing names are inserted at their sorted position.
    main = next((r for r in rules
                 if r["action"] == "SCMP_ACT_ALLOW" and is_unconditional(r)), None)
    if main is None:
        main = {"names": [], "action": "SCMP_ACT_ALLOW", "args": [],
                "comment": "", "includes": {}, "excludes": {}}
        rules.insert(0, main)
    for name in IO_URING:
        if name not in main["names"]:
            bisect.insort(main["names"], name)
    return profile


def deny_io_uring(profile):
    for rule in profile["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n not in IO_URING]
    profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
    profile["syscalls"].append({
        "names": list(IO_URING),
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": EPERM,
        "args": [],
        "comment": "as Docker 25+ (io_uring removed from the default profile)",
        "includes": {},
        "excludes": {},
    })
    return profile


def check(profile):
    """Return the io_uring syscalls that are NOT unconditionally allowed."""
    allowed, denied = set(), set()
    for rule in profile["syscalls"]:
        names = set(rule["names"]) & set(IO_URING)
        if rule["action"] == "SCMP_ACT_ALLOW" and is_unconditional(rule):
            allowed |= names
        elif rule["action"] != "SCMP_ACT_ALLOW":
            denied |= names
    if profile.get("defaultAction") == "SCMP_ACT_ALLOW":
        allowed |= set(IO_URING)
    return sorted(set(IO_URING) - (allowed - denied))


def dump(profile, out):
    # moby writes its profile with json.MarshalIndent(..., "", "\t") and no
    # trailing newline; do the same so the result diffs cleanly against it.
    text = json.dumps(profile, indent="\t", ensure_ascii=False)
    if out in (None, "-"):
        sys.stdout.write(text + "\n")
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", help="base profile (moby default.json)")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--deny-io-uring", action="store_true",
                      help="produce a profile that denies io_uring with EPERM")
    mode.add_argument("--check", metavar="PROFILE",
                      help="verify PROFILE allows the three io_uring syscalls")
    args = ap.parse_args()

    if args.check:
        with open(args.check, encoding="utf-8") as f:
            missing = check(json.load(f))
        if missing:
            print("%s: NOT allowed: %s" % (args.check, ", ".join(missing)))
            return 1
        print("%s: allows %s" % (args.check, ", ".join(IO_URING)))
        return 0

    if args.deny_io_uring:
        if not args.src:
            ap.error("--deny-io-uring needs --from PROFILE")
        with open(args.src, encoding="utf-8") as f:
            dump(deny_io_uring(json.load(f)), args.output)
        return 0

    text, origin = load_default_profile(args.src)
    profile = allow_io_uring(json.loads(text))
    assert not check(profile)
    dump(profile, args.output)
    print("gen-seccomp-profile: base profile from %s" % origin, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
