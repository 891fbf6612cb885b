"""`tradeengine` command line.

argparse rather than click/typer: the surface is small, it is in the standard library, and exit
codes and stderr output stay under our control (config problems: every problem on its own line,
exit code 2, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import ConfigError, EngineConfig, config_json_schema, load_config
from config.enums import TradingMode

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.features.store import FeatureStore
    from engine.kafka.admin import CreateResult, TopicDescription

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradeengine",
        description="Asyncio trading engine: agents -> blender -> selector -> risk -> venue.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the engine from a config file")
    run.add_argument("--config", "-c", type=Path, default=Path("engine.toml"), help="engine.toml")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--paper",
        action="store_true",
        help="paper trading (default: engine.mode of the config, paper unless set)",
    )
    mode.add_argument("--live", action="store_true", help="live trading (not available yet)")
    run.add_argument(
        "--start",
        type=_iso_date,
        default=None,
        metavar="DATE",
        help="first day to replay (YYYY-MM-DD, inclusive)",
    )
    run.add_argument(
        "--end",
        type=_iso_date,
        default=None,
        metavar="DATE",
        help="last day to replay (YYYY-MM-DD, inclusive)",
    )
    run.add_argument("--seed", type=int, default=None, help="override engine.seed")
    run.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for this run (must not exist or be empty); default: a "
        "new directory under engine.run_dir",
    )

    agent = commands.add_parser("agent", help="run one agent in its own process over Kafka")
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    agent_run = agent_commands.add_parser(
        "run", help="host one agent (remote = true in the config) fed by the engine over Kafka"
    )
    agent_run.add_argument("--config", "-c", type=Path, default=Path("engine.toml"))
    agent_run.add_argument("--agent", required=True, metavar="NAME", help="the agent's name")
    agent_run.add_argument(
        "--once", action="store_true", help="exit after the first run it joined has ended"
    )

    cfg = commands.add_parser("config", help="validate a config or print its JSON Schema")
    cfg_commands = cfg.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    validate = cfg_commands.add_parser("validate", help="list every problem in a config file")
    validate.add_argument("path", type=Path)
    cfg_commands.add_parser("schema", help="print the JSON Schema of engine.toml")

    features = commands.add_parser("features", help="inspect and manage the feature store")
    f_commands = features.add_subparsers(
        dest="features_command", metavar="SUBCOMMAND", required=True
    )
    f_ls = f_commands.add_parser("ls", help="feature sets, versions, sizes and ages")
    f_describe = f_commands.add_parser("describe", help="one feature set's declaration (JSON)")
    f_describe.add_argument("name")
    f_describe.add_argument("--version", type=int, default=None, help="default: the active one")
    f_promote = f_commands.add_parser("promote", help="make a version the active one")
    f_promote.add_argument("name")
    f_promote.add_argument("version", type=int)
    for sub in (f_ls, f_describe, f_promote):
        sub.add_argument("--config", "-c", type=Path, default=Path("engine.toml"))

    topics = commands.add_parser("topics", help="create or inspect the Kafka topics of a config")
    t_commands = topics.add_subparsers(dest="topics_command", metavar="SUBCOMMAND", required=True)
    t_create = t_commands.add_parser(
        "create", help="create the topics the config uses or lists (existing ones are kept)"
    )
    t_describe = t_commands.add_parser(
        "describe", help="partitions, replication and retention of those topics on the broker"
    )
    t_describe.add_argument("--json", action="store_true", help="print a JSON list")
    for sub in (t_create, t_describe):
        sub.add_argument("--config", "-c", type=Path, default=Path("engine.toml"))

    contracts = commands.add_parser("contracts", help="message contract tools")
    c_commands = contracts.add_subparsers(
        dest="contracts_command", metavar="SUBCOMMAND", required=True
    )
    schema = c_commands.add_parser("schema", help="export contract JSON Schemas")
    schema.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="target directory (default: the contracts/schemas folder of the package)",
    )
    schema.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed schemas are out of date",
    )
    return parser


def _load_config_or_report(path: Path) -> EngineConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"{path}: cannot read config: {exc.strerror or exc}", file=sys.stderr)
        return None


def _cmd_config_validate(path: Path) -> int:
    from engine.loader import AgentLoadError, load_agents

    cfg = _load_config_or_report(path)
    if cfg is None:
        return EXIT_USAGE
    try:
        loaded = load_agents(cfg.agents)
    except AgentLoadError as exc:
        for line in exc.problems:
            print(f"{path}: {line}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OK ({len(loaded)} agent(s), config hash {cfg.config_hash()})")
    return EXIT_OK


def _cmd_contracts_schema(directory: Path | None, check: bool) -> int:
    from contracts.schema_export import check_schemas, default_schema_dir, write_schemas

    target = directory or default_schema_dir()
    if check:
        problems = check_schemas(target)
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILURE if problems else EXIT_OK
    for written in write_schemas(target):
        print(written)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from config.models import secret_values
    from engine.app import Engine, LiveTradingUnavailableError, RunOptions, StartupError
    from engine.telemetry.logging import configure_logging

    path: Path = args.config
    if args.live:
        print(
            "tradeengine: --live refused: no live broker is implemented yet; "
            "use --paper (the default)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.start is not None and args.end is not None and args.end < args.start:
        print(
            f"tradeengine: empty date range: --end {args.end} is before --start {args.start}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    cfg = _load_config_or_report(path)
    if cfg is None:
        return EXIT_USAGE
    engine_section: dict[str, object] = {}
    if args.paper:
        engine_section["mode"] = TradingMode.PAPER
    if args.seed is not None:
        engine_section["seed"] = args.seed
    if engine_section:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update=engine_section)})
    # Loggers capture the configuration when components bind them, so logging is configured
    # before the engine exists; span ids are looked up through the engine once it does.
    built: list[Engine] = []
    configure_logging(
        cfg.telemetry.log_level,
        cfg.telemetry.log_format,
        component_levels=cfg.telemetry.component_levels,
        secrets=secret_values(cfg),
        span_lookup=lambda trace_id: built[0].telemetry.span_id_for(trace_id) if built else None,
    )
    try:
        engine = Engine(
            cfg,
            options=RunOptions(
                start=args.start, end=args.end, run_dir=args.run_dir, base_dir=path.parent
            ),
        )
        built.append(engine)
        engine.prepare()
    except LiveTradingUnavailableError as exc:
        print(f"tradeengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        for line in exc.problems:
            print(f"{path}: {line}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing was run", file=sys.stderr)
        return EXIT_USAGE
    from engine.gc_policy import run_gc_policy

    with run_gc_policy():  # this process exists for this run: see engine.gc_policy
        return _run_loop(_run_engine(engine))


async def _run_engine(engine: Engine) -> int:
    """Run until the replay ends or SIGINT/SIGTERM, then stop every component in order.

    Exit codes: 0 completed or cleanly interrupted; 2 the run could not start (run directory,
    I/O); 1 a component failed during the run (logged with its traceback, a partial summary is
    still written so the journal's contents are accounted for).
    """
    from engine.app import StartupError
    from engine.run_report import Progress, write_summary
    from engine.rundir import RunDirError

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.request_stop)
    try:
        try:
            await engine.start()
        except (RunDirError, OSError, StartupError) as exc:
            await engine.stop()  # whatever did start (journal, stages) is released
            print(f"tradeengine: cannot start: {exc}", file=sys.stderr)
            return EXIT_USAGE
        completed = False
        failure: BaseException | None = None
        try:
            with Progress(enabled=sys.stderr.isatty()) as progress:
                completed = await engine.run(on_step=progress.callback(engine))
        except Exception as exc:
            failure = exc
            engine.log.error("run failed", exc_info=exc)
        finally:
            if not completed and failure is None:
                engine.log.info("shutdown requested")
            await engine.stop()
        if engine.run_dir is not None:
            write_summary(engine, completed=completed)
        if failure is not None:
            print(f"tradeengine: the run failed: {failure}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _cmd_features(args: argparse.Namespace) -> int:
    from engine.features.admin import build_store
    from engine.features.store import UnknownFeatureSetError

    cfg = _load_config_or_report(args.config)
    if cfg is None:
        return EXIT_USAGE
    store = build_store(cfg.feature_store)
    if store.backend == "memory":
        print(
            "feature_store.backend is 'memory': features live inside one engine process and "
            "nothing is stored between runs; configure backend = 'redis' to inspect them",
            file=sys.stderr,
        )
    try:
        await store.start()
    except Exception as exc:
        print(f"tradeengine: cannot reach the feature store: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return await _features_command(args, store)
    except UnknownFeatureSetError as exc:
        print(f"tradeengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # e.g. Redis went away after a degraded start
        print(f"tradeengine: the feature store failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await store.stop()


async def _features_command(args: argparse.Namespace, store: FeatureStore) -> int:
    from datetime import UTC, datetime

    from engine.features.admin import describe, dumps, format_ls

    if args.features_command == "promote":
        await store.promote(args.name, args.version)
        print(f"{args.name}: active version is now {args.version}")
        return EXIT_OK
    infos = await store.list_sets()
    if args.features_command == "ls":
        print(format_ls(infos, datetime.now(UTC)))
        return EXIT_OK
    found = describe(infos, args.name, args.version)
    if found is None:
        version = f" version {args.version}" if args.version is not None else ""
        print(f"tradeengine: feature set {args.name!r}{version} is not registered", file=sys.stderr)
        return EXIT_USAGE
    print(dumps(found))
    return EXIT_OK


async def _cmd_topics(args: argparse.Namespace) -> int:
    """`topics create|describe`: exit 0 done; 1 a topic could not be created; 2 the config is
    invalid or the broker cannot be reached (as for `features`)."""
    import logging

    from aiokafka.errors import KafkaError

    from engine.kafka.admin import (
        KafkaUnreachableError,
        TopicAdmin,
        TopicAdminError,
        error_text,
        topic_specs,
        used_topics,
    )

    cfg = _load_config_or_report(args.config)
    if cfg is None:
        return EXIT_USAGE
    # aiokafka logs every failed connection attempt at ERROR; unconfigured, Python would print
    # them on stderr next to our own one-line error.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    specs = topic_specs(cfg)
    if not specs:
        print(
            f"{args.config}: no Kafka topics: configure kafka.egress, kafka.ingress, "
            "kafka.topics or a remote agent",
            file=sys.stderr,
        )
        return EXIT_OK
    if not cfg.kafka.enabled:
        print(
            "note: kafka.enabled is false; the topics are prepared for when it is enabled",
            file=sys.stderr,
        )
    admin = TopicAdmin(cfg.kafka)
    try:
        await admin.start()
    except (KafkaUnreachableError, ValueError) as exc:
        print(f"tradeengine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.topics_command == "create":
            results = await admin.create(specs)
            print(_format_create(results))
            return EXIT_FAILURE if any(r.outcome == "failed" for r in results) else EXIT_OK
        described = await admin.describe([spec.name for spec in specs])
        _print_topics(described, used_topics(cfg), as_json=args.json)
        return EXIT_OK
    except (KafkaError, TopicAdminError) as exc:
        print(f"tradeengine: the Kafka broker failed: {error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await admin.stop()


def _format_create(results: Sequence[CreateResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        if r.outcome == "failed":
            lines.append(f"{r.name:<{width}}  FAILED: {r.detail}")
        else:
            detail = f" ({r.detail})" if r.detail else ""
            lines.append(f"{r.name:<{width}}  {r.outcome}{detail}")
    return "\n".join(lines)


def _print_topics(
    described: Sequence[TopicDescription], used: dict[str, str], *, as_json: bool
) -> None:
    if as_json:
        rows = [
            {
                "name": d.name,
                "exists": d.exists,
                "partitions": d.partitions,
                "replication_factor": d.replication_factor,
                "configs": dict(sorted(d.configs.items())),
                "used_by": used.get(d.name, "listed in kafka.topics"),
            }
            for d in described
        ]
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("topic", "exists", "partitions", "replication", "retention.ms", "cleanup.policy")
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("used by")

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    for d in described:
        table.add_row(
            d.name,
            "yes" if d.exists else "NO",
            cell(d.partitions),
            cell(d.replication_factor),
            cell(d.configs.get("retention.ms")),
            cell(d.configs.get("cleanup.policy")),
            used.get(d.name, "listed in kafka.topics"),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # pipes and files: no wrapping at 80 columns
    console.print(table)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (an optional dependency on some platforms)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _cmd_agent_run(args: argparse.Namespace) -> int:
    from config.models import secret_values
    from engine.kafka.remote import RemoteAgentError, run_remote_agent
    from engine.loader import AgentLoadError
    from engine.telemetry.logging import configure_logging

    cfg = _load_config_or_report(args.config)
    if cfg is None:
        return EXIT_USAGE
    configure_logging(
        cfg.telemetry.log_level,
        cfg.telemetry.log_format,
        component_levels=cfg.telemetry.component_levels,
        secrets=secret_values(cfg),
    )
    try:
        return _run_loop(run_remote_agent(cfg, args.agent, once=args.once))
    except (RemoteAgentError, AgentLoadError) as exc:
        for line in exc.problems:
            print(f"{args.config}: {line}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "agent":
        return _cmd_agent_run(args)
    if args.command == "config":
        if args.config_command == "validate":
            return _cmd_config_validate(args.path)
        print(json.dumps(config_json_schema(), indent=2, sort_keys=True))
        return EXIT_OK
    if args.command == "features":
        return _run_loop(_cmd_features(args))
    if args.command == "topics":
        return _run_loop(_cmd_topics(args))
    if args.command == "contracts":
        return _cmd_contracts_schema(args.dir, args.check)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse enforces the set


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
