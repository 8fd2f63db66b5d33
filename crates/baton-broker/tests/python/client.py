#!/usr/bin/env python3
"""A broker client written from PROTOCOL.md alone, with pyzmq and one REQ socket.

For each `--queue NAME=COUNT` it enqueues COUNT jobs `{"method": "sum", "parameters": [...]}`
(interleaving the queues), plus, with `--fail-queue`, one job `{"method": "fail"}` without
retries. Then it waits for each job with `notify` and checks the reply: a sum job `completed`
with the sum of its parameters as `result`, the failing job `failed` with the worker's error
text. It also checks `fetch` (a known and an unknown job), `last`, `status` (with
`--expect-worker QUEUE=NAME`, that worker must be listed under QUEUE), `cancel` of a pending
job in `--idle-queue` (a queue no worker serves), an unknown command, and a `quit` without the
token (refused).

Exits with status 1 and a message on stderr at the first reply that differs from
PROTOCOL.md; on success prints one JSON line: {"ok": true, "jobs": {id: expected result}, ...}.
"""

import argparse
import json
import sys

import zmq

REPLY_TIMEOUT_MS = 30_000


def fail(message):
    print(f"client: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition, what, reply):
    if not condition:
        fail(f"{what}; reply was {json.dumps(reply, sort_keys=True)}")


class Client:
    def __init__(self, context, endpoint):
        self.socket = context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def ask(self, request):
        self.socket.send(json.dumps(request).encode("utf-8"))
        if not self.socket.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
            fail(f"no reply within {REPLY_TIMEOUT_MS} ms to {json.dumps(request)}")
        frames = self.socket.recv_multipart()
        if len(frames) != 1:
            fail(f"expected one reply frame to {json.dumps(request)}, got {frames!r}")
        try:
            reply = json.loads(frames[0].decode("utf-8"))
        except ValueError as error:
            fail(f"reply to {json.dumps(request)} is not JSON ({error}): {frames[0]!r}")
        if not isinstance(reply, dict):
            fail(f"reply to {json.dumps(request)} is not an object: {reply!r}")
        return reply

    def enqueue(self, job):
        reply = self.ask({"command": "enqueue", "job": job})
        check(reply.get("status") == "success", f"enqueue of {job} did not succeed", reply)
        job_id = reply.get("job_id")
        check(isinstance(job_id, str) and job_id.isdigit(), "job_id is not a decimal string", reply)
        return job_id


def check_job_object(job, job_id, queue, status, state, what):
    check(isinstance(job, dict), f"{what}: no job object", job)
    check(job.get("id") == job_id, f"{what}: job id is not {job_id!r}", job)
    check(job.get("queue") == queue, f"{what}: queue is not {queue!r}", job)
    check(job.get("status") == status, f"{what}: status is not {status!r}", job)
    check(job.get("state") == state, f"{what}: state is not {state!r}", job)
    for field in ("attempts", "priority", "created_at"):
        check(isinstance(job.get(field), int), f"{what}: {field} is not an integer", job)


def parse_pairs(values, what):
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            fail(f"{what} must be NAME=VALUE, not {value!r}")
        pairs.append((name, rest))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue", action="append", default=[], help="NAME=COUNT sum jobs")
    parser.add_argument("--fail-queue", help="queue of one failing job (no retries)")
    parser.add_argument("--idle-queue", required=True, help="a queue no worker serves")
    parser.add_argument("--expect-worker", action="append", default=[], help="QUEUE=NAME")
    args = parser.parse_args()
    queues = [(name, int(count)) for name, count in parse_pairs(args.queue, "--queue")]
    expected_workers = parse_pairs(args.expect_worker, "--expect-worker")

    context = zmq.Context()
    client = Client(context, args.endpoint)

    # enqueue: interleaved over the queues; each job's result is the sum of its parameters.
    expected = {}  # job id -> (queue, parameters, sum)
    last_of = {}
    for n in range(max((count for _, count in queues), default=0)):
        for queue, count in queues:
            if n >= count:
                continue
            parameters = [n, 10 * n, len(queue)]
            job_id = client.enqueue(
                {"queue": queue, "target": "Calc", "method": "sum", "parameters": parameters}
            )
            check(job_id not in expected, f"job id {job_id} handed out twice", expected)
            expected[job_id] = (queue, parameters, sum(parameters))
            last_of[queue] = job_id
    failing = None
    if args.fail_queue:
        failing = client.enqueue(
            {
                "queue": args.fail_queue,
                "target": "Calc",
                "method": "fail",
                "parameters": ["no"],
                "retry_count": 0,
            }
        )
        last_of[args.fail_queue] = failing

    # notify: answered when each job ends.
    for job_id, (queue, parameters, total) in expected.items():
        reply = client.ask({"command": "notify", "job_id": job_id})
        check(reply.get("status") == "completed", f"notify {job_id}: not completed", reply)
        check(reply.get("job_id") == job_id, f"notify {job_id}: wrong job_id", reply)
        job = reply.get("job")
        check_job_object(job, job_id, queue, "completed", "succeeded", f"notify {job_id}")
        check(job.get("result") == total, f"notify {job_id}: result is not {total}", reply)
        check(job.get("parameters") == parameters, f"notify {job_id}: parameters changed", reply)
        check(job.get("method") == "sum" and job.get("target") == "Calc",
              f"notify {job_id}: target/method changed", reply)
        check(isinstance(job.get("finished_at"), int), f"notify {job_id}: no finished_at", reply)
    if failing is not None:
        reply = client.ask({"command": "notify", "job_id": int(failing)})  # a number works too
        check(reply.get("status") == "failed", f"notify {failing}: not failed", reply)
        job = reply.get("job")
        check_job_object(job, failing, args.fail_queue, "failed", "failed", f"notify {failing}")
        error = 'refused: ["no"]'
        check(job.get("result") == error and job.get("error") == error,
              f"notify {failing}: result/error is not the worker's error text", reply)
        check(job.get("attempts") == 1, f"notify {failing}: retried despite retry_count 0", reply)

    # fetch: a known job, and an unknown one.
    first = next(iter(expected), None)
    if first is not None:
        queue, _, total = expected[first]
        reply = client.ask({"command": "fetch", "job_id": first})
        check(reply.get("status") == "success", f"fetch {first}: not success", reply)
        check_job_object(reply.get("job"), first, queue, "completed", "succeeded", f"fetch {first}")
        check(reply["job"].get("result") == total, f"fetch {first}: result is not {total}", reply)
    unknown = 10**12
    reply = client.ask({"command": "fetch", "job_id": str(unknown)})
    check(reply == {"status": "error", "message": f"job {unknown} not found"},
          "fetch of an unknown job: not the 'not found' error", reply)

    # last: the most recently enqueued job of each queue.
    for queue, job_id in last_of.items():
        reply = client.ask({"command": "last", "queue": queue})
        check(reply.get("status") == "success", f"last {queue}: not success", reply)
        check(reply.get("job", {}).get("id") == job_id, f"last {queue}: not job {job_id}", reply)
    reply = client.ask({"command": "last", "queue": args.idle_queue})
    check(reply == {"status": "error", "message": "no last job"},
          f"last {args.idle_queue}: an empty queue has no last job", reply)

    # status, in the seed client's own form.
    reply = client.ask({"parameters": [], "command": "status"})
    check(reply.get("status") == "OK", "status: not OK", reply)
    seen = reply.get("queues")
    check(isinstance(seen, dict), "status: no queues object", reply)
    for queue, _ in queues:
        check(queue in seen, f"status: queue {queue!r} not listed", reply)
    for queue, name in expected_workers:
        workers = seen.get(queue, {})
        listed = [w for w in workers.values() if w.get("name") == name]
        check(len(listed) == 1, f"status: worker {name!r} not listed once under {queue!r}", reply)
        check(listed[0].get("status") == "idle" and listed[0].get("queue") == queue,
              f"status: worker {name!r} is not idle on {queue!r}", reply)
    check(reply.get("jobs_in_progress") == 0, "status: jobs still in progress", reply)
    check(isinstance(reply.get("workers"), int), "status: workers is not an integer", reply)

    # cancel: a pending job in a queue that no worker serves.
    pending = client.enqueue(
        {"queue": args.idle_queue, "target": "Calc", "method": "sum", "parameters": [1, 2]}
    )
    reply = client.ask({"command": "fetch", "job_id": pending})
    check_job_object(reply.get("job"), pending, args.idle_queue, "pending", "pending",
                     f"fetch {pending} before cancel")
    reply = client.ask({"command": "cancel", "job_id": pending})
    check(reply.get("status") == "success", f"cancel {pending}: not success", reply)
    check_job_object(reply.get("job"), pending, args.idle_queue, "canceled", "canceled",
                     f"cancel {pending}")
    check(reply["job"].get("attempts") == 0, f"cancel {pending}: the job ran", reply)
    reply = client.ask({"command": "cancel", "job_id": pending})
    check(reply.get("status") == "success" and reply.get("job", {}).get("state") == "canceled",
          f"cancel {pending} again: not unchanged", reply)
    reply = client.ask({"command": "notify", "job_id": pending})
    check(reply.get("status") == "canceled", f"notify {pending}: not canceled", reply)
    if first is not None:
        reply = client.ask({"command": "cancel", "job_id": first})
        check(reply == {"status": "error", "message": f"conflict: job {first} already succeeded"},
              f"cancel {first}: a succeeded job must not be canceled", reply)

    # an unknown command, and a quit without the broker's token.
    reply = client.ask({"command": "frobnicate"})
    check(reply == {"status": "unknown command!"}, "unknown command: not the seed's reply", reply)
    reply = client.ask({"command": "quit"})
    check(reply == {"status": "error", "message": "quit needs the broker's quit token"},
          "quit without the token: not refused", reply)

    client.socket.close()
    context.term()
    summary = {
        "ok": True,
        "jobs": {job_id: total for job_id, (_, _, total) in expected.items()},
        "failed_job": failing,
        "canceled_job": pending,
        "last": last_of,
    }
    print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
