#!/usr/bin/env python3
"""gwms_startd.py: the glidein's startd stand-in, for pools served by `gwms collector serve`.

Where condor_startd is not available (trials, tests), glidein_startup.sh runs this instead. It
advertises a Machine ad carrying the glidein's GLIDEIN_* attributes, claims one matching job
at a time through the collector's `/v1/jobs/claim` (the server matches both ways, atomically),
runs it in the glidein's work dir (the job's Cmd and Arguments, default /bin/true), reports
its exit code and output tail via `/v1/jobs/<id>/complete`, and retires when idle past
GLIDEIN_Max_Idle or past the retire time. On exit it invalidates its ad and writes a summary.
Small and FIFO; a real pool uses condor_startd. Stdlib only, Python 3.6.
"""

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

TAIL_BYTES = 64 * 1024
AD_LIFETIME_FACTOR = 3
EXIT_OK = 0
EXIT_ERROR = 2


class CollectorError(Exception):
    """A call to the collector failed; the message names the call and the reason."""


def log(message, *args):
    text = message % args if args else message
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write("%s gwms_startd[%d]: %s\n" % (stamp, os.getpid(), text))
    sys.stderr.flush()


class Collector(object):
    """JSON over HTTP to the embedded collector, with the glidein's bearer token if any."""

    def __init__(self, url, token=None, timeout=30.0):
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self):
        return "Collector(%r)" % self.url

    def call(self, path, body):
        headers = {"Content-Type": "application/json", "User-Agent": "gwms_startd"}
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return json.loads(answer.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read().decode("utf-8")).get("error", "")
            except ValueError:
                reason = ""
            raise CollectorError("POST %s: HTTP %d %s" % (path, exc.code, reason)) from None
        except (OSError, ValueError) as exc:
            raise CollectorError("POST %s%s: %s" % (self.url, path, exc)) from None


def read_config(path):
    """glidein_config as a dict: KEY=VALUE lines, the last value of a key wins."""
    values = {}
    if not path or not os.path.exists(path):
        return values
    with open(path, encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            values[key.strip()] = value
    return values


def _literal(value):
    """A glidein_config value as an ad value: integers, booleans, else a string."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def memory_mb():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1024


class StartdStandIn(object):
    """One slot, one job at a time."""

    def __init__(self, args, collector, clock=time.time):
        self.args = args
        self.collector = collector
        self.clock = clock
        self.config = read_config(args.config)
        self.name = "slot1@%s@%s" % (args.glidein_id, socket.gethostname())
        self.started = clock()
        self.retire_at = args.retire_at
        self.die_at = args.die_at
        self.idle_since = self.started
        self.jobs = []
        self.stop_reason = None
        self.state = ("Unclaimed", "Idle")
        self.last_advertised = 0.0

    def machine_ad(self):
        ad = {}
        for key, value in self.config.items():
            if key.upper().startswith("GLIDEIN_") and key != "GLIDEIN_Start":
                ad[key] = _literal(value)
        cpus = self.args.cpus or os.cpu_count() or 1
        ad.update(
            {
                "MyType": "Machine",
                "Name": self.name,
                "Machine": socket.gethostname(),
                "GlideinMyType": "Machine",
                "IsGlidein": True,
                "GLIDEIN_ID": self.args.glidein_id,
                "GLIDEIN_Factory": self.args.factory,
                "GLIDEIN_Entry_Name": self.args.entry,
                "GLIDEIN_Client": self.args.client,
                "GLIDEIN_ToRetire": int(self.retire_at),
                "GLIDEIN_ToDie": int(self.die_at),
                "GLIDEIN_Max_Idle": int(self.args.idle),
                "Cpus": int(cpus),
                "Memory": int(self.args.memory or memory_mb()),
                "Disk": _disk_kb(self.args.work_dir),
                "Arch": platform.machine().upper().replace("AMD64", "X86_64"),
                "OpSys": platform.system().upper(),
                "State": self.state[0],
                "Activity": self.state[1],
                "DaemonStartTime": int(self.started),
                "TotalJobsRun": len(self.jobs),
                "START": {"expr": self.config.get("GLIDEIN_Start") or "true"},
            }
        )
        return ad

    def advertise(self, force=False):
        now = self.clock()
        if not force and now - self.last_advertised < self.args.update_interval:
            return
        lifetime = int(max(60, AD_LIFETIME_FACTOR * self.args.update_interval))
        self.collector.call("/v1/ads", {"ads": [self.machine_ad()], "lifetime": lifetime})
        self.last_advertised = now

    def invalidate(self):
        constraint = 'MyType == "Machine" && Name == %s' % json.dumps(self.name)
        try:
            self.collector.call("/v1/ads/invalidate", {"type": "Machine", "constraint": constraint})
        except CollectorError as exc:
            log("could not invalidate the machine ad: %s", exc)

    def should_stop(self):
        now = self.clock()
        if self.stop_reason:
            return True
        if now >= self.retire_at:
            self.stop_reason = "retired: past the retire time"
        elif now - self.idle_since >= self.args.idle:
            self.stop_reason = "retired: idle for %d s (GLIDEIN_Max_Idle)" % int(
                now - self.idle_since
            )
        return self.stop_reason is not None

    def loop(self):
        self.advertise(force=True)
        log("advertised %s to %s", self.name, self.collector.url)
        while not self.should_stop():
            try:
                answer = self.collector.call("/v1/jobs/claim", {"machine": self.machine_ad()})
            except CollectorError as exc:
                log("claim failed: %s", exc)
                answer = {"job": None}
            job = answer.get("job")
            if job:
                self.run_job(job)
                self.idle_since = self.clock()
                continue
            try:
                self.advertise()
            except CollectorError as exc:
                log("advertise failed: %s", exc)
            time.sleep(self.args.poll)
        log("stopping: %s", self.stop_reason)

    def run_job(self, job):
        job_id = "%s.%s" % (job.get("ClusterId"), job.get("ProcId"))
        self.state = ("Claimed", "Busy")
        try:
            self.advertise(force=True)
        except CollectorError as exc:
            log("advertise failed: %s", exc)
        exit_code, tail, duration = self.execute(job, job_id)
        log("job %s ended with exit code %d after %.1f s", job_id, exit_code, duration)
        self.jobs.append({"id": job_id, "exit_code": exit_code, "seconds": round(duration, 3)})
        try:
            self.collector.call(
                "/v1/jobs/%s/complete" % job_id, {"exit_code": exit_code, "output_tail": tail}
            )
        except CollectorError as exc:
            log("could not report job %s complete: %s", job_id, exc)
        self.state = ("Unclaimed", "Idle")

    def execute(self, job, job_id):
        scratch = os.path.join(self.args.work_dir, "execute", "dir_" + job_id.replace(".", "_"))
        os.makedirs(scratch, exist_ok=True)
        command = _text(job.get("Cmd")) or "/bin/true"
        arguments = _text(job.get("Arguments")) or _text(job.get("Args")) or ""
        try:
            argv = [command] + shlex.split(arguments)
        except ValueError as exc:
            return 1, "gwms_startd: cannot parse Arguments: %s\n" % exc, 0.0
        output_path = os.path.join(scratch, "_gwms_job_output")
        env = dict(os.environ)
        env.update(_CONDOR_SCRATCH_DIR=scratch, _CONDOR_JOB_IWD=scratch, GWMS_JOB_ID=job_id)
        started = self.clock()
        limit = max(1.0, self.die_at - started)
        log(
            "running job %s: %s (limit %.0f s)",
            job_id,
            " ".join(shlex.quote(a) for a in argv),
            limit,
        )
        with open(output_path, "wb") as output:
            try:
                child = subprocess.Popen(
                    argv, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                output.write(("gwms_startd: cannot start %s: %s\n" % (command, exc)).encode())
                code = 127
            else:
                try:
                    code = child.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    code = child.wait()
                    output.write(b"\ngwms_startd: job killed at the glidein's end of life\n")
                    self.stop_reason = "the glidein reached its end of life while running a job"
        code = code if code >= 0 else 128 - code
        return code, _tail(output_path), self.clock() - started

    def summary(self):
        return {
            "name": self.name,
            "glidein_id": self.args.glidein_id,
            "reason": self.stop_reason,
            "jobs": self.jobs,
            "started": int(self.started),
            "ended": int(self.clock()),
        }


def _text(value):
    if value is None or isinstance(value, dict):
        return None
    return str(value)


def _tail(path):
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def _disk_kb(path):
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    return int(info.f_bavail * info.f_frsize // 1024)


def parse_args(argv=None):
    now = time.time()
    parser = argparse.ArgumentParser(prog="gwms_startd.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--collector", required=True, help="host:port or URL of gwms collector serve"
    )
    parser.add_argument(
        "--token-file", help="file holding the bearer token (the glidein's IDTOKEN)"
    )
    parser.add_argument("--config", help="glidein_config (KEY=VALUE lines)")
    parser.add_argument("--glidein-id", required=True)
    parser.add_argument("--factory", default="")
    parser.add_argument("--entry", default="")
    parser.add_argument("--client", default="")
    parser.add_argument("--work-dir", default=os.getcwd())
    parser.add_argument("--retire-at", type=float, default=now + 86400, help="epoch seconds")
    parser.add_argument("--die-at", type=float, default=now + 86400, help="epoch seconds")
    parser.add_argument(
        "--idle", type=float, default=1200.0, help="retire after this many idle seconds"
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between claim attempts")
    parser.add_argument(
        "--update-interval", type=float, default=60.0, help="seconds between ad updates"
    )
    parser.add_argument("--cpus", type=int)
    parser.add_argument("--memory", type=int, help="MB")
    parser.add_argument("--summary", help="write a JSON summary here at the end")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
    startd = StartdStandIn(args, Collector(args.collector, token))

    def on_signal(signum, frame):
        # Once: a second TERM (the shell forwards it) must not cut the ad's invalidation short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        startd.stop_reason = "stopped by signal %d" % signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = EXIT_OK
    try:
        startd.loop()
    except KeyboardInterrupt:
        startd.stop_reason = startd.stop_reason or "interrupted"
    except CollectorError as exc:
        log("cannot work with the collector: %s", exc)
        startd.stop_reason = "collector unusable: %s" % exc
        code = EXIT_ERROR
    finally:
        startd.invalidate()
        if args.summary:
            with open(args.summary, "w") as handle:
                json.dump(startd.summary(), handle, indent=1, sort_keys=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
