"""`ng911 testbed ...` (run the scenarios, redraw a report, list scenarios, check or export a
topology) and `ng911 chain` (the NYC preset in one process, one call per borough)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ng911.errors import Ng911Error


def register(sub: Any) -> None:
    p = sub.add_parser(
        "testbed",
        help="measure what TLS costs on each hop: scenarios, set-up delay, ladders, captures",
        description=(
            "Run the call chain (caller, VSP proxy, ESRP + LoST, PSAP server, call taker) in "
            "one process under each scenario's per-hop transports, place calls, and write "
            "report.html, results.json, per-hop message logs, per-hop pcapng captures (TLS keys "
            "and element names inside) and a TLS key log."
        ),
    )
    tsub = p.add_subparsers(dest="testbed_command", metavar="ACTION")

    r = tsub.add_parser("run", help="run scenarios and write a run directory")
    r.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario to run (repeatable; default: all). `ng911 testbed scenarios` lists them",
    )
    r.add_argument("--calls", type=int, default=50, help="calls per scenario (default 50)")
    r.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="warm calls placed per second, over all scenarios (default 20)",
    )
    r.add_argument(
        "--sequential",
        action="store_true",
        help="run the scenarios one after the other (default: all chains up at once, "
        "warm calls round-robin, so background load drifts hit every scenario alike)",
    )
    r.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole set N times on fresh chains and report the spread between runs "
        "(default 1)",
    )
    r.add_argument(
        "--cold-calls",
        type=int,
        metavar="N",
        help="cold calls per scenario (new connections, full TLS handshakes), spread over "
        "its calls under the same load as warm ones (default: one per caller location)",
    )
    r.add_argument("--out", type=Path, help="run directory (default runs/<UTC timestamp>)")
    r.add_argument("--topology", type=Path, help="topology TOML (default: packaged NYC)")
    r.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not add the plain scenario when it is not selected",
    )
    r.add_argument(
        "--lost-cache",
        action="store_true",
        help="let the ESRP cache LoST answers (RFC 5222 expires); default: query every call",
    )
    r.add_argument(
        "--hangup", type=float, default=0.05, help="seconds the caller stays after the 200"
    )
    r.add_argument("--t1", type=float, default=0.5, help="SIP timer T1 in seconds (UDP)")
    r.add_argument(
        "--impair",
        action="append",
        default=[],
        metavar="HOP:SPEC",
        help="delay/jitter/loss on a hop through user-space relays, e.g. "
        "hop2:delay=20,jitter=2,loss=1 (ms, ms, %%; repeatable)",
    )
    r.add_argument(
        "--reconnect-after",
        type=float,
        metavar="SECONDS",
        help="the caller closes its idle connection to the VSP after this long, so later "
        "calls reconnect and resume the TLS session on hop 1 (default: keep it open); keep "
        "it above any silence within a call (set-up time, --hangup) and below the gap "
        "between calls",
    )
    r.add_argument(
        "--processes",
        action="store_true",
        help="run each element as its own OS process (`python -m ng911 run --bundle "
        "<scenario>/bundles/HOST`), events collected from each when it stops",
    )
    r.add_argument(
        "--netns",
        action="store_true",
        help="each host in its own network namespace, cabled to one bridge, addresses from "
        "10.91.0.0/24, a real capture per hop (root; implies --processes; falls back to "
        "--processes on loopback when namespaces cannot be made)",
    )
    for role, place in (("vsp", "VSP proxy"), ("esrp", "ESRP (a plain routing proxy + LoST)")):
        r.add_argument(
            f"--{role}",
            choices=("ng911", "kamailio", "both"),
            default="ng911",
            help=f"who runs the {place}: ng911, kamailio, or both (each scenario run twice "
            "side by side, `NAME+kamailio-" + role + "`); Kamailio runs beside the in-process "
            "chain",
        )
    r.add_argument(
        "--logger",
        choices=("deferred", "live", "down", "off"),
        default="deferred",
        help="the i3 Logging Service: the elements' LogEvents sent once the calls are over "
        "(deferred, the default: logging takes no CPU from a measured call), during the calls "
        "(live, as deployed), to a logger that never starts (down: failure injection), or no "
        "logger (off)",
    )
    r.add_argument("--element-logs", action="store_true", help="a JSON log per element")
    r.add_argument("--no-captures", action="store_true", help="skip writing the pcapng captures")
    r.add_argument("--quiet", action="store_true", help="no progress or tables")
    r.set_defaults(func=_run)

    rep = tsub.add_parser("report", help="redraw report.html from a results.json")
    rep.add_argument("results", type=Path, help="the results.json of a run directory")
    rep.add_argument("--out", type=Path, help="HTML file (default: beside results.json)")
    rep.set_defaults(func=_report)

    cmp = tsub.add_parser(
        "compare",
        help="two or more runs side by side: per scenario and hop, the differences and "
        "their 95%% intervals",
        description=(
            "Set every later run against the first: for each scenario they share and each "
            "hop, element, LoST, handshakes and the SRD, warm and cold, the medians and the "
            "difference with 95%% bootstrap intervals of the median and the mean. A RUN is a "
            "run directory or its results.json."
        ),
    )
    cmp.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="results.json files, or run directories holding one; the first is the baseline",
    )
    cmp.add_argument("--out", type=Path, help="HTML file (default compare.html here)")
    cmp.set_defaults(func=_compare)

    ls = tsub.add_parser("scenarios", help="list the scenarios and their transports")
    ls.set_defaults(func=_scenarios)

    topo = tsub.add_parser("topology", help="validate a topology and show its hosts")
    topo.add_argument("--topology", type=Path, help="topology TOML (default: packaged NYC)")
    topo.add_argument("--scenario", help="apply this scenario's transports")
    topo.set_defaults(func=_topology)
    ex = tsub.add_parser(
        "export",
        help="write one self-contained bundle per host, to run the chain across machines",
        description=(
            "Plan the topology for the hosts' real addresses (a host's `address`, else the "
            "next one of --subnet) and write DIR/<host>/: bundle.toml (its element's config, "
            "with a host table of every domain), its certificate, key and the CA, LoST's "
            "boundaries. Copy each to its machine and start it with `ng911 run --bundle DIR`."
        ),
    )
    ex.add_argument("out", type=Path, metavar="DIR", help="where the bundles go")
    ex.add_argument("--topology", type=Path, help="topology TOML (default: packaged NYC)")
    ex.add_argument("--scenario", default="plain", help="transports (default plain)")
    ex.add_argument(
        "--subnet",
        default="10.91.0.0/24",
        help="addresses for hosts whose address is auto, in host order (default 10.91.0.0/24)",
    )
    ex.add_argument("--t1", type=float, default=0.5, help="SIP timer T1 in seconds (UDP)")
    ex.set_defaults(func=_export)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    c = sub.add_parser(
        "chain",
        help="run the whole call chain in one process and call from each NYC borough",
        description=(
            "Start the NYC preset (LoST, the VSP proxy, the ESRP, a psapd per borough and a "
            "default-route PSAP, a call taker each, a caller) in one process on loopback; "
            "place one 911 call from each borough and print where it went and its set-up "
            "delay."
        ),
    )
    c.add_argument(
        "--scenario",
        default="plain",
        choices=("plain", "tcp", "tls-e2e", "tls-vsp-psap", "tls-all"),
        help="transports of the four hops (default %(default)s; `ng911 testbed scenarios`)",
    )
    c.add_argument("--json", action="store_true", help="print the call records as JSON")
    c.set_defaults(func=run_chain)


def _export(args: argparse.Namespace) -> int:
    from ng911.testbed.bundle import export_topology
    from ng911.testbed.plan import ChainOptions
    from ng911.testbed.scenarios import get_scenario
    from ng911.testbed.topology import load_topology

    try:
        topo = load_topology(args.topology, get_scenario(args.scenario))
        if args.out.exists() and any(p.name != ".pki" for p in args.out.iterdir()):
            print(f"ng911 testbed export: {args.out} is not empty", file=sys.stderr)
            return 2
        done = export_topology(topo, args.out, subnet=args.subnet, opts=ChainOptions(t1=args.t1))
    except Ng911Error as exc:
        print(f"ng911 testbed export: {exc}", file=sys.stderr)
        return 2
    width = max(len(n) for n in done)
    for name, d in done.items():
        print(f"{name:<{width}}  {topo.host(name).role:<9}  {d}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ng911.testbed.impair import parse_impairment
    from ng911.testbed.plan import ChainOptions
    from ng911.testbed.run import RunConfig, run

    if args.calls < 1 or args.rate <= 0 or args.repeat < 1:
        print("ng911 testbed: --calls and --repeat must be ≥ 1 and --rate > 0", file=sys.stderr)
        return 2
    if args.cold_calls is not None and not 0 <= args.cold_calls <= args.calls:
        print("ng911 testbed: --cold-calls must be between 0 and --calls", file=sys.stderr)
        return 2
    try:
        impairments = tuple(parse_impairment(x) for x in args.impair)
    except Ng911Error as exc:
        print(f"ng911 testbed: {exc}", file=sys.stderr)
        return 2
    cfg = RunConfig(
        scenarios=list(args.scenario),
        calls=args.calls,
        rate=args.rate,
        out=args.out,
        topology=args.topology,
        baseline=not args.no_baseline,
        repeat=args.repeat,
        cold_calls=args.cold_calls,
        chain=ChainOptions(
            t1=args.t1,
            hangup_after=args.hangup,
            lost_cache=args.lost_cache,
            element_logs=Path("elements") if args.element_logs else None,
            impairments=impairments,
            reconnect_after=args.reconnect_after,
            processes=args.processes or args.netns,
            netns=args.netns,
            logger=args.logger != "off",
            logger_down=args.logger == "down",
            logger_defer=args.logger == "deferred",
        ),
        progress=None if args.quiet else sys.stdout,
        interleave=not args.sequential,
        captures=not args.no_captures,
        implementations={"vsp": args.vsp, "esrp": args.esrp},
        # set by a command layer above the testbed (`--console`, ng911.console.commands)
        watch=getattr(args, "chain_watch", None),
    )
    try:
        result = run(cfg)
    except Ng911Error as exc:
        print(f"ng911 testbed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: the chains were closed on the way out
        print("\nng911 testbed: interrupted; no report written", file=sys.stderr)
        return 130
    print(f"\nreport: {result.report}")
    if result.interrupted:
        done = sum(len(r.get("call_records", [])) for r in result.results["scenarios"].values())
        print(
            f"ng911 testbed: interrupted; the report covers the {done} calls measured so far",
            file=sys.stderr,
        )
        return 130
    if result.failed:
        print(f"{result.failed} calls failed: see results.json", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from ng911.testbed.report import load_results, write_report

    try:
        results = load_results(args.results)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"ng911 testbed report: {args.results}: {reason}", file=sys.stderr)
        return 2
    out = args.out or args.results.with_name("report.html")
    try:
        write_report(results, out)
    except OSError as exc:
        print(f"ng911 testbed report: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ng911.testbed.compare import compare_runs, format_compare, render_compare_html

    try:
        cmp = compare_runs(args.runs)
    except Ng911Error as exc:
        print(f"ng911 testbed compare: {exc}", file=sys.stderr)
        return 2
    print(format_compare(cmp, "warm"))
    if any(r["group"] == "cold" for r in cmp["rows"]):
        print()
        print(format_compare(cmp, "cold"))
    out = args.out or Path("compare.html")
    out.write_text(render_compare_html(cmp), encoding="utf-8")
    print(f"\n{out}")
    return 0


def _scenarios(args: argparse.Namespace) -> int:
    from ng911.testbed.run import describe, scenario_names

    for name in scenario_names():
        print(describe(name))
    return 0


def _topology(args: argparse.Namespace) -> int:
    from ng911.testbed.scenarios import get_scenario
    from ng911.testbed.topology import load_topology

    try:
        scenario = get_scenario(args.scenario) if args.scenario else None
        topo = load_topology(args.topology, scenario)
    except Ng911Error as exc:
        print(f"ng911 testbed topology: {exc}", file=sys.stderr)
        return 2
    print(
        f"topology {topo.name} ({topo.source}): transports {','.join(topo.transports)}, "
        f"LoST {topo.lost}{' mutual' if topo.lost_mutual else ''}"
    )
    for h in topo.hosts:
        extra = h.borough or (f"psap={h.psap}" if h.psap else "") or (h.aor or "")
        print(f"  {h.name:<22} {h.role:<10} {h.domain:<40} {extra}")
    return 0


async def _chain(args: argparse.Namespace) -> int:
    from ng911.testbed.launcher import open_chain

    chain = await open_chain(args.scenario, hangup_after=0.01, keep_events=False, log_keep=0)
    ok = True
    topo = chain.topology
    try:
        print(f"scenario {args.scenario}: hops {' / '.join(topo.transports)}, LoST {topo.lost}")
        for loc in topo.locations:
            name, lat, lon = loc.name, loc.lat, loc.lon
            rec = await chain.place_call(lat, lon, timeout=10)
            ok = ok and rec.ok
            if args.json:
                print(json.dumps({**rec.to_dict(), "psap": chain.psap_of(rec)}))
                continue
            s180 = f"{rec.setup_180 * 1000:.2f} ms" if rec.setup_180 is not None else "-"
            s200 = f"{rec.setup_200 * 1000:.2f} ms" if rec.setup_200 is not None else "-"
            print(
                f"  {name:<19} ({lat:.4f},{lon:.4f}) -> {rec.status} {rec.reason:<4} "
                f"PSAP {chain.psap_of(rec) or '-':<19} INVITE->180 {s180:>9}  "
                f"INVITE->200 {s200:>9}"
            )
    finally:
        await chain.close()
    return 0 if ok else 1


def run_chain(args: argparse.Namespace) -> int:
    logging.getLogger("ng911").setLevel(logging.WARNING)
    return asyncio.run(_chain(args))
