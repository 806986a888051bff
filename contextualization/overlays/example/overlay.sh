#!/bin/sh
# Example VO overlay (the entry point of a tarball overlay): run by the glidein bootstrap as
# the pilot user, before the pilot, in this directory, with a time limit (default 300 s).
# Any non-zero exit stops the glidein; its output is shipped to the factory in
# overlay-<name>.log, so say clearly what is wrong. POSIX sh.
#
# Environment: GWMS_OVERLAY_NAME, GWMS_OVERLAY_DIR (this directory), GLIDEIN_ID,
# GLIDEIN_FACTORY, GLIDEIN_ENTRY, GLIDEIN_CLIENT, GLIDEIN_WORK_DIR (the pilot's work dir),
# X509_USER_PROXY, HOME, PATH.
set -eu

echo "overlay $GWMS_OVERLAY_NAME for glidein $GLIDEIN_ID (entry $GLIDEIN_ENTRY)"

# 1. Check what the VO's jobs need from the node; fail early with one clear line.
for tool in tar gzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool on this image"; exit 1; }
done

# 2. Leave files for the pilot in its work dir (readable by the pilot user, who runs this).
if [ -w "$GLIDEIN_WORK_DIR" ]; then
    printf 'VO_SETUP_DONE=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$GLIDEIN_WORK_DIR/vo-setup.env"
fi
echo "overlay done"
