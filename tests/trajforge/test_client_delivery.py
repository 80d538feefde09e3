"""The client SDK's delivery against a fake service (httpx.MockTransport): a backlog goes out at once and in
batches, the waits the service asks for (Retry-After) are kept, a service without the batch endpoint still gets
every envelope, close() delivers what is left, events go in requests the service takes."""

from __future__ import annotations

import json
import logging
import threading

import httpx

from trajforge.client import IngestClient


class Service:
    """Answers every envelope 200 (the batch endpoint too, unless `batch` is False); `down` refuses connections;
    `busy` is a list of (status, headers) answered first."""

    def __init__(self, batch: bool = True):
        self.batch, self.down, self.busy, self.calls, self.received = batch, False, [], [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("connection refused")
        if self.busy:
            status, headers = self.busy.pop(0)
            return httpx.Response(status, json={"error": "busy", "message": "busy"}, headers=headers)
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.url.path == "/v1/training/ingest":
            self.received.append(json.loads(request.content))
            return httpx.Response(200, json={"accepted": True, "duplicate": False})
        if request.url.path == "/v1/training/ingest:batch" and self.batch:
            batch = json.loads(request.content)
            self.received.extend(batch)
            return httpx.Response(200, json={"results": [{"index": i, "status": 200, "accepted": True} for i in range(len(batch))]})
        return httpx.Response(404, json={"error": "not_found", "message": f"no route {request.url.path}"})


def client_of(service: Service, **options) -> IngestClient:
    return IngestClient("http://ingest.test", transport=httpx.MockTransport(service), **options)


def test_a_backlog_goes_out_at_the_next_send_in_order_in_batches_the_service_takes(sleeps, clock):
    service = Service()
    service.down = True
    with client_of(service, max_retries=0, offline_probe_s=60) as client:
        for n in range(1200):
            assert client.send("s", b'{"n":%d}' % n) is None
        service.down, clock[0] = False, clock[0] + 61
        service.calls.clear()
        assert client.send("s", b'{"n":1200}')["status"] == 200
        assert client.spool.pending() == 0
    assert [body["n"] for body in service.received] == list(range(1201))
    assert service.calls == ["/health"] + ["/v1/training/ingest:batch"] * 3  # 500 + 500 + 201, not 1201 requests


def test_the_wait_a_retry_after_header_asks_for_is_kept(sleeps):
    service = Service()
    service.busy = [(503, {"Retry-After": "7"})]
    with client_of(service, max_retries=5) as client:
        assert client.send("s", b'{"n":1}')["status"] == 200
    assert sleeps == [7.0]


def test_after_a_long_retry_after_sends_wait_that_long_not_the_offline_probe(sleeps, clock):
    service = Service()
    service.busy = [(429, {"Retry-After": "120"})]  # longer than backoff_max_s: not slept through
    with client_of(service, max_retries=5, backoff_max_s=60, offline_probe_s=600) as client:
        assert client.send("s", b'{"n":1}') is None and sleeps == []
        clock[0] += 100
        assert client.send("s", b'{"n":2}') is None  # still inside the service's wait: nothing asked
        assert service.calls == ["/v1/training/ingest"]
        clock[0] += 21
        assert client.send("s", b'{"n":3}')["status"] == 200  # its wait is over: no /health probe needed
    assert [body["n"] for body in service.received] == [1, 2, 3]


def test_a_service_without_the_batch_endpoint_gets_every_envelope_one_by_one(sleeps):
    service = Service(batch=False)
    with client_of(service, max_retries=0) as client:
        for n in range(5):
            client.spool.put("s", b'{"n":%d}' % n)
        report = client.flush()
        assert (report.delivered, report.rejected, report.pending) == (5, 0, 0)
        assert client.spool.rejections() == []
    assert [body["n"] for body in service.received] == [0, 1, 2, 3, 4]
    assert service.calls == ["/v1/training/ingest:batch"] + ["/v1/training/ingest"] * 5


def test_closing_the_client_delivers_what_the_offline_mode_left_in_the_spool(sleeps, caplog):
    service = Service()
    service.down = True
    with client_of(service, max_retries=0, offline_probe_s=60) as client:
        assert client.send("s", b'{"n":1}') is None
        service.down = False
        assert client.send("s", b'{"n":2}') is None  # the probe is not due: only spooled
    assert [body["n"] for body in service.received] == [1, 2]
    assert not any("are lost" in record.getMessage() for record in caplog.records)


def test_close_without_flush_leaves_the_spool_alone(sleeps, tmp_path):
    service = Service()
    with client_of(service, spool_path=tmp_path / "spool.db") as client:
        client.spool.put("s", b'{"n":1}')
        client.close(flush=False)
    assert service.received == []


def test_events_past_the_per_request_cap_go_in_several_requests_in_order(sleeps):
    seen: list[list[int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        if len(events) > 1000 or len(request.content) > 300_000:
            return httpx.Response(413, json={"error": "too_many_events", "message": "too many"})
        seen.append([event["n"] for event in events])
        return httpx.Response(200, json={"accepted": len(events), "duplicates": 0, "event_ids": [f"e{e['n']}" for e in events]})

    events = [{"n": n, "payload": "x" * (1000 if n >= 2000 else 10)} for n in range(2600)]
    with IngestClient("http://ingest.test", transport=httpx.MockTransport(handler), max_body_bytes=300_000) as client:
        answer = client.send_events(events)
    assert [n for part in seen for n in part] == list(range(2600))
    assert [len(part) for part in seen][:2] == [1000, 1000] and all(len(part) <= 300 for part in seen[2:])
    assert answer["accepted"] == 2600 and answer["duplicates"] == 0 and answer["event_ids"][-1] == "e2599"


def test_sends_waiting_on_a_drain_that_found_the_service_down_do_not_each_retry_it_again(sleeps):
    service, calls = Service(), []

    def slow_refusal(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        threading.Event().wait(0.1)  # a connection attempt takes a while (time.sleep is the fixture's here)
        raise httpx.ConnectError("connection refused")

    with IngestClient("http://ingest.test", transport=httpx.MockTransport(slow_refusal), max_retries=2) as client:
        start = threading.Barrier(4)

        def agent(n: int) -> None:
            start.wait()
            client.send("s", b'{"n":%d}' % n)

        threads = [threading.Thread(target=agent, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.spool.pending() == 4
        client.close(flush=False)
    assert len(calls) == 3  # one drain's attempt and its two retries; the three sends behind it only spooled
    assert service.calls == []


def test_a_refusal_without_a_message_is_logged_with_its_status_and_error(caplog):
    def service(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)
        if request.url.path.endswith(":batch"):  # a front that refuses every batch, saying why only in "error"
            return httpx.Response(400, json={"error": "unreadable body"})
        return httpx.Response(422 if batch.get("n") == 2 else 200, json={"error": "schema: n is 2"} if batch.get("n") == 2 else {})

    with IngestClient("http://ingest.test", transport=httpx.MockTransport(service), max_retries=0) as client:
        client.enqueue("s", [json.dumps({"n": n}).encode() for n in range(3)])
        with caplog.at_level(logging.INFO, logger="trajforge.client"):
            report = client.flush()
    assert (report.delivered, report.rejected, report.pending) == (2, 1, 0)
    logged = [record.getMessage() for record in caplog.records]
    assert "a batch of 3 envelopes was refused whole (HTTP 400: unreadable body); sending it in halves" in logged
    assert "envelope of s refused for good (HTTP 422: schema: n is 2): set aside in the spool's rejected table" in logged
