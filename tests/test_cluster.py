"""The deploy kit on several hosts: a load balancer and two app hosts, each a Linux network
namespace (tests/cluster.py), with rsgi -w 2 run as deploy/systemd/rsgi.service runs it and
HAProxy (deploy/haproxy, active checks of /healthz) or nginx (deploy/nginx, passive checks
with proxy_next_upstream) in front, configured from deploy/ with only the addresses changed.

Under a steady load of keep-alive and new connections from a client host:
- a rolling deploy (TERM, wait, start again, one host after the other) fails no request;
- HUP on every host at once fails no request;
- a host whose processes are all SIGKILLed fails only the requests in flight on it, none
  after the balancer's checks, and serves again once restarted;
- WebSockets on a host that stops gracefully are closed with 1012 and reconnect to the other.

Making namespaces needs root and iproute2 (CI runs as root; .ci/run installs iproute2,
haproxy and nginx-light). Without them these tests skip, with a warning in the summary.
"""

from __future__ import annotations

import re
import signal
import time
import warnings
from collections import Counter

import cluster as cl
import pytest

pytestmark = pytest.mark.rsgi_only

APPS = {"app1": f"{cl.SUBNET}.11", "app2": f"{cl.SUBNET}.12"}


def skip_with_reason(reason: str) -> None:
    # A warning shows in the summary of every pytest run, -q included: a skipped cluster
    # test is seen, not buried in the skip count.
    warnings.warn(f"test_cluster: {reason}", stacklevel=2)
    pytest.skip(reason)


class Cluster:
    def __init__(self, network: cl.Network, apps: list[cl.AppHost], workdir) -> None:
        self.network = network
        self.apps = apps
        self.workdir = workdir
        self.client_ns = network.ns("client")
        self.lb_ns = network.ns("lb")

    def load(self, **kwargs) -> cl.Load:
        return cl.Load(self.client_ns, **kwargs)

    def logs(self) -> str:
        return "\n".join(app.process.tail() for app in self.apps)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = cl.namespaces_unavailable()
    if reason:
        skip_with_reason(f"cannot make network namespaces: {reason}")
    cl.clean_leftovers()
    network = cl.Network({"client": cl.CLIENT_ADDR, "lb": cl.LB_ADDR, **APPS})
    network.create()
    workdir = tmp_path_factory.mktemp("cluster")
    apps = [
        cl.AppHost(name, addr, network.ns(name), network.ns("lb"), workdir)
        for name, addr in APPS.items()
    ]
    try:
        for app in apps:
            app.start(wait=False)
        for app in apps:
            app.wait_ready()
        yield Cluster(network, apps, workdir)
    finally:
        for app in apps:
            app.process.stop()
        network.destroy()


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def balancer(request, cluster):
    kind = request.param
    if cl.find_tool(kind) is None:
        package = "nginx-light" if kind == "nginx" else "haproxy"
        skip_with_reason(f"{kind} is not installed (Debian: apt-get install {package})")
    lb = cl.Balancer(kind, cluster.lb_ns, cluster.apps, cluster.workdir)
    lb.start()
    try:
        yield lb
    finally:
        lb.stop()


@pytest.fixture
def lb(cluster, balancer):
    """The balancer, with every app host up and served through it (a test that failed
    halfway may have left one stopped)."""
    for app in cluster.apps:
        if not app.process.alive():
            app.start(wait=False)
    for app in cluster.apps:
        app.wait_ready()
    seen = set()

    def all_seen() -> bool:
        answer = cl.http_get(cluster.client_ns, cl.LB_ADDR, cl.LB_PORT, "/")
        if answer and answer[0] == 200:
            seen.add(re.search(rb'"instance": "(\w+)"', answer[1]).group(1).decode())
        return seen == {app.name for app in cluster.apps}

    cl.wait_for(all_seen, 30, f"{balancer.kind} to route to every host (seen {seen})", 0.1)
    return balancer


def check_window(lb: cl.Balancer) -> float:
    """Seconds after which the balancer sends a dead host nothing, with a margin for a busy
    machine: HAProxy's fall x inter plus one inter; nginx takes the host out at once, retrying
    the failed requests on the other (proxy_next_upstream)."""
    if lb.kind == "haproxy":
        inter, fall, _ = cl.haproxy_check_timing()
        return (fall + 1) * inter + 1.0
    return 1.0


def wait_haproxy_state(lb: cl.Balancer, host: str, state: str, timeout: float) -> float:
    cl.wait_for(lambda: lb.server_states().get(host) == state, timeout, f"{host} {state}", 0.02)
    return time.monotonic()


def test_kit_timings_agree():
    """The host's --shutdown-delay (deploy/systemd) covers HAProxy's checks taking it out."""
    options = cl.systemd_rsgi_options()
    delay = float(cl.option_value(options, "--shutdown-delay"))
    assert cl.option_value(options, "--health-path") == "/healthz"
    inter, fall, rise = cl.haproxy_check_timing()
    assert delay > (fall + 1) * inter, (delay, fall, inter)
    upstream = (cl.DEPLOY / "nginx" / "upstream.conf").read_text()
    assert re.search(r"max_fails=\d+ fail_timeout=\d+s", upstream)
    site = (cl.DEPLOY / "nginx" / "rsgi.conf").read_text()
    assert re.search(r"proxy_next_upstream error timeout http_502 http_503;", site)


@pytest.mark.timeout(150)
def test_rolling_deploy_fails_no_request(cluster, lb):
    starts = {app.name: app.starts for app in cluster.apps}
    load = cluster.load()
    with load:
        begin = time.monotonic()
        for app in cluster.apps:
            load.wait_served(app.name, begin, 10)
        for app in cluster.apps:
            other = next(a for a in cluster.apps if a is not app)
            assert app.health() == 200
            term = time.monotonic()
            app.process.signal(signal.SIGTERM)
            cl.wait_for(lambda a=app: a.health() == 503, 2, f"{app.name}'s /healthz 503")
            if lb.kind == "haproxy":
                # Out of HAProxy's rotation before rsgi stops accepting: that is what
                # --shutdown-delay is for.
                down = wait_haproxy_state(lb, app.name, "DOWN", app.shutdown_delay)
                assert down - term < app.shutdown_delay
                assert lb.server_states()[other.name] == "UP"
            assert app.process.wait(app.shutdown_delay + 30) == 0, app.process.tail()
            gone = time.monotonic()
            # rsgi served through the whole delay before stopping.
            assert gone - term >= app.shutdown_delay - 0.2
            load.wait_served(other.name, gone, 10)
            restart = time.monotonic()
            app.start()
            # Back in the rotation (HAProxy: `rise` checks; nginx: at once, or after
            # fail_timeout if it had marked it failed) before the next host goes.
            load.wait_served(app.name, restart, 30)
    print(load.summary())
    assert not load.failures(), f"{load.summary()}\n{lb.logs()}\n{cluster.logs()}"
    served = load.served()
    assert len(load.records) >= 300 and all(served[a.name] >= 50 for a in cluster.apps), served
    # Each host was started once more (a start that failed would have been retried).
    assert all(app.starts == starts[app.name] + 1 for app in cluster.apps)


@pytest.mark.timeout(120)
def test_hup_on_every_host_at_once_fails_no_request(cluster, lb):
    load = cluster.load()
    with load:
        begin = time.monotonic()
        for app in cluster.apps:
            load.wait_served(app.name, begin, 10)
        old = {app.name: app.worker_pids() for app in cluster.apps}
        masters = {app.name: app.process.pid for app in cluster.apps}
        assert all(len(pids) == 2 for pids in old.values()), old
        time.sleep(1.0)
        hup = time.monotonic()
        for app in cluster.apps:
            app.process.signal(signal.SIGHUP)
        new = {}
        for app in cluster.apps:
            cl.wait_for(
                lambda a=app: len(a.worker_pids() - old[a.name]) == 2,
                30,
                f"two new workers on {app.name}",
            )
            new[app.name] = app.worker_pids() - old[app.name]
        # The old workers finish what they have and exit.
        cl.wait_for(
            lambda: not any(cl.process_alive(p) for pids in old.values() for p in pids),
            30,
            "the old workers to exit",
        )
        replaced = time.monotonic()
        for app in cluster.apps:
            load.wait_served(app.name, replaced, 15, count=50)
    print(load.summary())
    assert not load.failures(), f"{load.summary()}\n{lb.logs()}\n{cluster.logs()}"
    for app in cluster.apps:
        # Same master; every request after the old workers left was served by a new one.
        assert app.process.pid == masters[app.name] and app.process.alive()
        pids = {r.pid for r in load.since(replaced) if r.instance == app.name}
        assert pids and pids <= new[app.name], (app.name, pids, new[app.name])
    # The load ran through the reload: requests were served while old and new workers
    # swapped.
    during = [r for r in load.records if hup <= r.start <= replaced]
    assert len(during) >= 10, (len(during), replaced - hup)
    assert len(load.since(hup)) >= 100


@pytest.mark.timeout(120)
def test_host_crash_fails_only_requests_in_flight(cluster, lb):
    victim, survivor = cluster.apps
    load = cluster.load()
    with load:
        begin = time.monotonic()
        for app in cluster.apps:
            load.wait_served(app.name, begin, 10)
        killed = time.monotonic()
        victim.crash()
        dead = time.monotonic()
        window = check_window(lb)
        if lb.kind == "haproxy":
            down = wait_haproxy_state(lb, victim.name, "DOWN", window + 2)
            assert down - killed < window, (down - killed, window)
        # Traffic goes on for a while on the survivor alone.
        time.sleep(window + 2)
        quiet = time.monotonic()
        load.wait_served(survivor.name, quiet, 10, count=20)
        assert load.served(dead)[victim.name] == 0
        restart = time.monotonic()
        victim.start()
        # The host rejoins.
        load.wait_served(victim.name, restart, 30)
        if lb.kind == "haproxy":
            assert lb.server_states()[victim.name].startswith("UP")
    failures = load.failures()
    print(f"killed at {killed:.3f}, dead at {dead:.3f}; {load.summary()}")
    context = f"{load.summary()}\n{lb.logs()}\n{cluster.logs()}"
    # Only requests that were in flight when the host died failed: each client has one
    # request in flight at most, and none of them started after the processes were dead.
    assert all(f.start <= dead and f.end >= killed for f in failures), context
    assert len(failures) <= load.keepalive + load.fresh, context
    assert not [f for f in failures if f.start > killed + window], context
    assert len(load.since(dead)) >= 50, context


@pytest.mark.timeout(120)
def test_websockets_close_with_1012_and_reconnect_to_the_other_host(cluster, lb):
    clients = [cl.WsClient(cluster.client_ns, f"ws-{i}") for i in range(6)]
    try:
        for client in clients:
            client.start()
        cl.wait_for(lambda: all(c.current() for c in clients), 15, "every WebSocket open")
        # Both balancers pick the host with the fewest connections, but HAProxy's slowstart
        # gives a host that just came back a smaller share: stop the host holding the most.
        hosts = Counter(c.current() for c in clients)
        victim = next(a for a in cluster.apps if a.name == hosts.most_common(1)[0][0])
        survivor = next(a for a in cluster.apps if a is not victim)
        on_victim = [c for c in clients if c.current() == victim.name]
        on_survivor = [c for c in clients if c.current() == survivor.name]
        echoed = {c.name: c.echoes[victim.name] for c in on_victim}
        term = time.monotonic()
        victim.process.signal(signal.SIGTERM)
        # During --shutdown-delay the open WebSockets are still served.
        time.sleep(min(2.0, victim.shutdown_delay / 2))
        assert all(c.echoes[victim.name] > echoed[c.name] for c in on_victim)
        assert not any(e.kind == "close" for c in clients for e in c.events)

        def reconnected(client: cl.WsClient) -> bool:
            return [e.kind for e in client.events][-2:] == ["close", "open"]

        cl.wait_for(
            lambda: all(reconnected(c) for c in on_victim),
            victim.shutdown_delay + 15,
            "the victim's WebSockets to close and reconnect",
        )
        assert victim.process.wait(30) == 0, victim.process.tail()
        time.sleep(0.5)  # a few echoes on the new connections
    finally:
        for client in clients:
            client.stop()
    report = {c.name: c.events for c in clients}
    print(f"TERM at {term:.3f}: {report}")
    for client in on_victim:
        events = client.events
        kinds = [(e.kind, e.instance, e.code) for e in events]
        # rsgi's graceful shutdown closes with 1012 (service restart), once the delay is over;
        # the client then reconnects to the survivor.
        assert kinds[:2] == [("open", victim.name, None), ("close", victim.name, 1012)], report
        assert kinds[-1] == ("open", survivor.name, None), report
        closed = events[1].time
        assert closed - term >= victim.shutdown_delay - 0.2, (closed - term, report)
        # HAProxy has taken the stopping host out by then, so the first reconnect lands on
        # the survivor. nginx, without active checks, may send a reconnect to the stopping
        # host in the instant its socket closes: that connection, accepted just before, is
        # closed with 1012 as well, and the next one goes to the survivor.
        between = kinds[2:-1]
        if lb.kind == "haproxy":
            assert not between, report
        assert len(between) <= 4, report
        allowed = {("close", None, 1012), ("close", victim.name, 1012), ("open", victim.name, None)}
        assert set(between) <= allowed, report
        assert all(e.time - closed < 1.0 for e in events[2:-1]), report
        assert client.echoes[survivor.name] > 0
    for client in on_survivor:
        assert [e.kind for e in client.events] == ["open"], report
