#!/usr/bin/env python3
"""A worker that speaks exactly the seed worker's messages (PROTOCOL.md), written with pyzmq.

It connects a REQ socket, says `ready` for one queue, and then loops on the reply it is owed:

- a job (`"command": "job"`): sends `touch` for it from a separate DEALER socket (no
  delimiter frame) and reads the touch reply there, computes the result, and answers on the
  REQ socket with `completed` carrying `"ready": true`, which is its next `ready`;
- an `idle` ping: answers `completed` with the ping's `job_id`, `"result": "idle, doing
  nothing"` and `"ready": true`;
- `quit`: exits at once, without replying.

After `--max-jobs` jobs (its own stop condition) it sends `goodbye` with its `worker_name` from
a NEW REQ socket, waits for `{"status": "see ya later"}` and exits.

Jobs it understands: `"method": "sum"` succeeds with the sum of `parameters`; `"method":
"fail"` answers `"status": "error"` with the result `"refused: <parameters>"`. Anything else
is answered as an error too.

Every event is printed on stdout as one JSON object per line, ending with
`{"event": "exit", "stopped": "goodbye" | "quit" | "no reply", ...}`. With `--reply-timeout`,
a worker whose REQ socket gets no reply for that long stops with `"stopped": "no reply"` and
says what it last sent (`last_sent`). Any protocol surprise exits with status 1 and a message
on stderr.
"""

import argparse
import json
import sys

import zmq


def emit(**event):
    print(json.dumps(event, sort_keys=True), flush=True)


def fail(message):
    print(f"worker_seed: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def send_json(socket, message):
    socket.send(json.dumps(message).encode("utf-8"))


def recv_json(socket, timeout_ms, what):
    """One single-frame JSON reply within timeout_ms (None: wait forever), else None."""
    if timeout_ms is not None and not socket.poll(timeout_ms, zmq.POLLIN):
        return None
    frames = socket.recv_multipart()
    if len(frames) != 1:
        fail(f"{what}: expected one frame, got {len(frames)}: {frames!r}")
    try:
        message = json.loads(frames[0].decode("utf-8"))
    except ValueError as error:
        fail(f"{what}: not JSON ({error}): {frames[0]!r}")
    if not isinstance(message, dict):
        fail(f"{what}: not a JSON object: {message!r}")
    return message


class SeedWorker:
    def __init__(self, context, args):
        self.context = context
        self.args = args
        self.reply_timeout_ms = (
            None if args.reply_timeout is None else int(args.reply_timeout * 1000)
        )
        self.jobs = 0
        self.pings = 0
        self.touches = 0
        self.results = {}
        self.last_sent = None
        self.req = self.socket(zmq.REQ)

    def socket(self, kind):
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 1000)
        socket.connect(self.args.endpoint)
        return socket

    def send(self, message):
        send_json(self.req, message)
        self.last_sent = message["command"]

    def finish(self, stopped):
        emit(
            event="exit",
            stopped=stopped,
            worker=self.args.name,
            jobs=self.jobs,
            pings=self.pings,
            touches=self.touches,
            results=self.results,
            last_sent=self.last_sent,
        )

    def run(self):
        self.send(
            {"command": "ready", "queue": self.args.queue, "worker_name": self.args.name}
        )
        emit(event="ready", worker=self.args.name, queue=self.args.queue)
        while True:
            message = recv_json(self.req, self.reply_timeout_ms, "reply to " + self.last_sent)
            if message is None:
                self.finish("no reply")
                return
            command = message.get("command")
            if command == "quit":
                self.finish("quit")
                return
            if command == "idle":
                self.answer_ping(message)
            elif command == "job":
                self.run_job(message)
                if self.args.max_jobs and self.jobs >= self.args.max_jobs:
                    self.say_goodbye()
                    self.finish("goodbye")
                    return
            else:
                fail(f"unexpected reply to {self.last_sent}: {message!r}")

    def answer_ping(self, ping):
        if "job_id" not in ping:
            fail(f"idle ping without job_id: {ping!r}")
        self.send(
            {
                "command": "completed",
                "ready": True,
                "job_id": ping["job_id"],
                "result": "idle, doing nothing",
                "status": "success",
            }
        )
        self.pings += 1
        emit(event="ping", worker=self.args.name, job_id=ping["job_id"], pings=self.pings)

    def run_job(self, job):
        job_id = job.get("job_id")
        if not isinstance(job_id, str) or not job_id.isdigit():
            fail(f"job message without a decimal string job_id: {job!r}")
        if job.get("queue") != self.args.queue:
            fail(f"job from queue {job.get('queue')!r}, serving {self.args.queue!r}: {job!r}")
        self.touch(job_id)
        parameters = job.get("parameters")
        method = job.get("method")
        if method == "sum" and isinstance(parameters, list):
            status, result = "success", sum(parameters)
        elif method == "fail":
            status, result = "error", f"refused: {json.dumps(parameters)}"
        else:
            status, result = "error", f"unknown method {method!r}"
        self.send(
            {
                "command": "completed",
                "ready": True,
                "job_id": job_id,
                "result": result,
                "status": status,
            }
        )
        self.jobs += 1
        self.results[job_id] = result
        emit(event="job", worker=self.args.name, job_id=job_id, status=status, result=result)

    def touch(self, job_id):
        """`touch` from a DEALER opened for the job: one frame out, one frame back."""
        dealer = self.socket(zmq.DEALER)
        try:
            send_json(dealer, {"command": "touch", "job_id": job_id})
            reply = recv_json(dealer, 10_000, "touch reply")
            if reply is None:
                fail(f"no reply to touch of job {job_id} within 10 s")
            if reply != {"status": "success"}:
                fail(f"touch of running job {job_id} answered {reply!r}")
            self.touches += 1
        finally:
            dealer.close(linger=0)

    def say_goodbye(self):
        """`goodbye` from a new REQ socket; the old one stays open, waiting, until answered."""
        leaving = self.socket(zmq.REQ)
        try:
            send_json(leaving, {"command": "goodbye", "worker_name": self.args.name})
            reply = recv_json(leaving, 10_000, "goodbye reply")
            if reply is None:
                fail("no reply to goodbye within 10 s")
            if reply != {"status": "see ya later"}:
                fail(f"goodbye answered {reply!r}")
        finally:
            leaving.close(linger=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the broker's ROUTER endpoint")
    parser.add_argument("--queue", default="default", help="the queue to serve")
    parser.add_argument("--name", required=True, help="the worker_name to register")
    parser.add_argument(
        "--max-jobs", type=int, default=0, help="leave with goodbye after this many jobs (0: never)"
    )
    parser.add_argument(
        "--reply-timeout", type=float, default=None, help="seconds to wait for a reply (default: forever)"
    )
    args = parser.parse_args()
    context = zmq.Context()
    worker = SeedWorker(context, args)
    try:
        worker.run()
    finally:
        worker.req.close(linger=0)
        context.term()


if __name__ == "__main__":
    main()
