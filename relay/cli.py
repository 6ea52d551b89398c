"""The ``yrelay`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from auth import AuthSettings, KeySource, Role, issue_token, parse_duration

from .config import MIB, RelayConfig

# Environment variable holding the HS256 shared secret, so it stays out of
# the process list.
SECRET_ENV = "YRELAY_AUTH_SECRET"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2,
               "MIB": 1024**2, "G": 1000**3, "GB": 1000**3, "GIB": 1024**3}


def _size(text: str) -> int:
    """Parse a byte size such as 1048576, 512KiB or 32MiB."""
    stripped = text.strip()
    digits = stripped.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    unit = stripped[len(digits):].strip().upper()
    if not digits.isdigit() or unit not in _SIZE_UNITS or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size in bytes such as 1048576, 512KiB or 32MiB, got {text!r}")
    return int(digits) * _SIZE_UNITS[unit]


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the parser for ``yrelay``."""
    defaults = RelayConfig()
    parser = argparse.ArgumentParser(prog="yrelay", description="Yjs-compatible sync relay.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a relay (embedded SQLite storage by default)")
    serve.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    serve.add_argument("--port", type=int, default=defaults.port, help="TCP port (default %(default)s)")
    _add_storage_options(serve, defaults)
    serve.add_argument("--max-message-size", type=_size, default=defaults.max_message_size,
                       help="largest inbound WebSocket message in bytes; larger ones close with 1009 "
                            f"(default {defaults.max_message_size // MIB} MiB)")
    serve.add_argument("--unload-grace", type=_non_negative_float, default=defaults.unload_grace,
                       help="seconds a room without connections stays loaded (default %(default)s)")
    serve.add_argument("--compact-updates", type=_positive_int, default=defaults.compact_updates,
                       help="fold a document's log into a snapshot after this many updates (default %(default)s)")
    serve.add_argument("--compact-bytes", type=_size, default=defaults.compact_bytes,
                       help="or after this many log bytes, at least the snapshot's size "
                            f"(default {defaults.compact_bytes // MIB} MiB)")
    serve.add_argument("--send-queue-bytes", type=_size, default=defaults.send_queue_bytes,
                       help="bytes queued for one slow reader before it is closed with 1013 "
                            f"(default {defaults.send_queue_bytes // MIB} MiB)")
    serve.add_argument("--sync-chunk-bytes", type=_size, default=defaults.sync_chunk_bytes,
                       help="split a sync step 2 reply larger than this into several messages "
                            f"(default {defaults.sync_chunk_bytes // MIB} MiB)")
    serve.add_argument("--awareness-timeout", type=_non_negative_float, default=defaults.awareness_timeout,
                       help="seconds after which an awareness state that was not renewed is removed "
                            "(default %(default)s)")
    serve.add_argument("--awareness-batch-ms", type=_non_negative_float, default=defaults.awareness_batch_interval * 1000,
                       help="send awareness updates that arrive within this many milliseconds of the last one "
                            "together in one message; 0 sends each at once (default %(default)s)")
    serve.add_argument("--history-interval", type=_non_negative_float, default=defaults.history_interval,
                       help="keep a copy of a document at most this often, in seconds, when its log is "
                            "folded into a snapshot (default %(default)s)")
    serve.add_argument("--history-keep", type=_positive_int, default=defaults.history_keep,
                       help="number of copies kept per document (default %(default)s)")
    serve.add_argument("--shutdown-grace", type=_non_negative_float, default=defaults.shutdown_grace,
                       help="seconds SIGTERM waits for rooms to be committed (default %(default)s)")
    serve.add_argument("--server", choices=("hypercorn", "native"), default=defaults.server,
                       help="HTTP and WebSocket server: Hypercorn, or the relay's own asyncio server, which uses "
                            "less CPU and memory per connection (see bench/README.md; default %(default)s)")
    serve.add_argument("--websocket-compression", action="store_true",
                       help="accept permessage-deflate when a client offers it (off by default: "
                            "it costs more CPU than it saves on small updates)")
    cache = serve.add_argument_group("Redis cache of hot documents")
    cache.add_argument("--redis", default=None, metavar="URL",
                       help="Redis URL, e.g. redis://127.0.0.1:6379/0; snapshots are cached there")
    cache.add_argument("--redis-ttl", type=_positive_int, default=defaults.redis_ttl,
                       help="seconds a cached snapshot lives (default %(default)s)")
    mesh = serve.add_argument_group("mesh (NATS JetStream)")
    mesh.add_argument("--nats", action="append", default=[], metavar="URL",
                      help="NATS server URL, e.g. nats://127.0.0.1:4222; repeat or comma-separate for a cluster. "
                           "Without it the relay runs alone")
    mesh.add_argument("--relay-id", default=None, help="this relay's id in logs and messages (default: random)")
    mesh.add_argument("--nats-stream", default="YRELAY_UPDATES", help="JetStream stream name (default %(default)s)")
    mesh.add_argument("--nats-subject-prefix", default="yrelay", help="subject prefix (default %(default)s)")
    mesh.add_argument("--nats-replicas", type=_positive_int, default=1,
                      help="stream replicas when the relay creates the stream; use 3 in production (default %(default)s)")
    mesh.add_argument("--nats-storage", choices=("file", "memory"), default="file",
                      help="stream storage when the relay creates it (default %(default)s)")
    mesh.add_argument("--no-compactor", action="store_true",
                      help="with --mongodb: do not fold the stream into snapshots in this process "
                           "(run 'yrelay compact' instead)")
    mesh.add_argument("--peer-timeout", type=_non_negative_float, default=10.0,
                      help="seconds without a heartbeat after which a relay's awareness states are removed "
                           "(default %(default)s)")
    _add_auth_options(serve, defaults)
    serve.add_argument("--log-level", default=defaults.log_level,
                       choices=("debug", "info", "warning", "error"),
                       help="lowest level of log lines written to standard error (default %(default)s)")
    for name, help_text, folder_help in (
        ("export", "write every stored document to a folder", "folder to write into (created if missing)"),
        ("import", "store every document of an export folder", "folder written by 'yrelay export'"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("folder", type=Path, help=folder_help)
        _add_storage_options(command, defaults)
        command.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                             help="lowest level of log lines written to standard error (default %(default)s)")
    compact = commands.add_parser("compact", help="fold the JetStream log into MongoDB snapshots, without serving")
    compact.add_argument("--nats", action="append", required=True, metavar="URL", help="NATS server URL (repeatable)")
    compact.add_argument("--mongodb", required=True, metavar="URL", help="MongoDB connection string")
    compact.add_argument("--mongodb-database", default=defaults.mongodb_database, help="(default %(default)s)")
    compact.add_argument("--mongodb-write-concern", default=defaults.mongodb_write_concern,
                         help="(default %(default)s)")
    compact.add_argument("--nats-stream", default="YRELAY_UPDATES", help="(default %(default)s)")
    compact.add_argument("--nats-subject-prefix", default="yrelay", help="(default %(default)s)")
    compact.add_argument("--redis", default=None, metavar="URL", help="refresh cached snapshots in this Redis")
    compact.add_argument("--redis-ttl", type=_positive_int, default=defaults.redis_ttl, help="(default %(default)s)")
    compact.add_argument("--history-interval", type=_non_negative_float, default=defaults.history_interval,
                         help="keep a version of a document at most this often, in seconds (default %(default)s)")
    compact.add_argument("--history-keep", type=_positive_int, default=defaults.history_keep,
                         help="versions kept per document (default %(default)s)")
    compact.add_argument("--compactor-id", default=None, help="lease holder name in logs (default: random)")
    compact.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                         help="lowest level of log lines written to standard error (default %(default)s)")
    token = commands.add_parser("token", help="issue tokens for development")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser(
        "issue", help="print a token signed with the shared secret (or --private-key-file)",
        description="Print a signed JWT that grants ROLE on the documents matching each PATTERN. The key is "
                    f"the shared secret from --auth-secret-file or ${SECRET_ENV}, or --private-key-file.",
    )
    issue.add_argument("--doc", action="append", required=True, metavar="PATTERN",
                       help="document name pattern: '*' matches within one path segment, '**' across "
                            "segments (repeatable)")
    issue.add_argument("--role", required=True, choices=("viewer", "editor", "admin"), help="role on those documents")
    issue.add_argument("--ttl", default="1h", help="lifetime such as 90s, 15m, 12h or 7d (default %(default)s)")
    issue.add_argument("--subject", default=None, help="the 'sub' claim (default: a random dev-… id)")
    issue.add_argument("--issuer", default=None, help="the 'iss' claim")
    issue.add_argument("--audience", default=None, help="the 'aud' claim")
    issue.add_argument("--auth-secret-file", type=Path, default=None, metavar="PATH",
                       help=f"file holding the shared secret (default: ${SECRET_ENV})")
    issue.add_argument("--private-key-file", type=Path, default=None, metavar="PATH",
                       help="sign with this PEM private key (RSA, EC P-256 or Ed25519) instead of the secret")
    issue.add_argument("--key-id", default=None, help="the 'kid' header, naming the key in the issuer's JWKS")
    issue.add_argument("--roles-claim", default=defaults.auth_roles_claim, help="claim name (default %(default)s)")
    return parser


def _add_auth_options(parser: argparse.ArgumentParser, defaults: RelayConfig) -> None:
    group = parser.add_argument_group(
        "authentication",
        "Without --auth-secret-file, $" + SECRET_ENV + ", --jwks-url or --oidc-issuer the relay accepts anyone, "
        "and only on a loopback address unless --allow-anonymous is given.",
    )
    group.add_argument("--auth-secret-file", type=Path, default=None, metavar="PATH",
                       help=f"check HS256 tokens with the secret in this file, at least 32 bytes (or set ${SECRET_ENV})")
    group.add_argument("--oidc-issuer", default=None, metavar="URL",
                       help="check tokens with the keys of this OpenID Connect issuer (found through "
                            "<URL>/.well-known/openid-configuration); also sets the expected 'iss'")
    group.add_argument("--jwks-url", default=None, metavar="URL", help="check tokens with the keys of this JWKS")
    group.add_argument("--auth-issuer", default=None, help="expected 'iss' claim (default: the OIDC issuer, if any)")
    group.add_argument("--auth-audience", default=None, help="expected 'aud' claim (not checked when unset)")
    group.add_argument("--auth-algorithms", default=None, metavar="LIST",
                       help="comma-separated allowed 'alg' values (default: HS256 with a secret; RS256, ES256, EdDSA and "
                            "Ed25519 with issuer keys)")
    group.add_argument("--auth-leeway", type=int, default=defaults.auth_leeway,
                       help="seconds of clock skew allowed on 'exp' and 'nbf' (default %(default)s)")
    group.add_argument("--roles-claim", default=defaults.auth_roles_claim,
                       help="claim mapping document patterns to roles (default %(default)s)")
    group.add_argument("--jwks-refetch-interval", type=_non_negative_float, default=60.0,
                       help="minimum seconds between key fetches caused by unknown key ids (default %(default)s)")
    group.add_argument("--auth-timeout", type=_non_negative_float, default=defaults.auth_timeout,
                       help="seconds a connection without a token in its URL or headers has to send one in an "
                            "auth message (default %(default)s)")
    group.add_argument("--allow-anonymous", action="store_true",
                       help="accept connections without tokens on a non-loopback address")


def _read_secret(path: Path | None) -> bytes | None:
    """Return the shared secret from ``path``, else from the environment, else None."""
    if path is not None:
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise SystemExit(f"yrelay: cannot read the secret file {path}: {exc.strerror}") from None
        return secret
    value = os.environ.get(SECRET_ENV)
    if value is None:
        return None
    if not value.strip():
        # An empty variable is a mistake (a failed command substitution,
        # say); starting without token checks would hide it.
        raise SystemExit(f"yrelay: ${SECRET_ENV} is set but empty; unset it or give it a secret of 32 bytes or more")
    return value.strip().encode()


def _auth_settings(args: argparse.Namespace) -> AuthSettings | None:
    """Build token checks from the serve options; None when no key source is set."""
    secret = _read_secret(args.auth_secret_file)
    if args.oidc_issuer and args.jwks_url:
        raise SystemExit("yrelay: set either --oidc-issuer or --jwks-url, not both")
    keys = None
    if args.oidc_issuer or args.jwks_url:
        keys = KeySource(oidc_issuer=args.oidc_issuer, jwks_url=args.jwks_url,
                         refetch_interval=args.jwks_refetch_interval)
    if secret is None and keys is None:
        return None
    algorithms = frozenset(a.strip() for a in (args.auth_algorithms or "").split(",") if a.strip())
    try:
        return AuthSettings(
            secret=secret,
            keys=keys,
            algorithms=algorithms,
            issuer=args.auth_issuer or args.oidc_issuer,
            audience=args.auth_audience,
            leeway=args.auth_leeway,
            roles_claim=args.roles_claim,
        )
    except ValueError as exc:
        raise SystemExit(f"yrelay: invalid authentication settings: {exc}") from None


def _issue_token(args: argparse.Namespace) -> None:
    try:
        ttl = parse_duration(args.ttl)
        role = Role.parse(args.role)
        private_key = args.private_key_file.read_bytes() if args.private_key_file else None
        secret = None if private_key is not None else _read_secret(args.auth_secret_file)
        if private_key is None and secret is None:
            raise ValueError(f"no key: pass --auth-secret-file or --private-key-file, or set ${SECRET_ENV}")
        token = issue_token(
            grants={pattern: role for pattern in args.doc}, ttl=ttl, secret=secret, private_key_pem=private_key,
            key_id=args.key_id, subject=args.subject, issuer=args.issuer, audience=args.audience,
            roles_claim=args.roles_claim,
        )
    except (ValueError, OSError) as exc:
        print(f"yrelay token issue: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(token)


def _run_compactor(args: argparse.Namespace) -> None:
    import asyncio
    import secrets
    import signal

    import nats

    from persistence.mesh_snapshots import MeshSnapshots
    from persistence.redis_cache import RedisCache

    from .compactor import Compactor
    from .mesh.subjects import Subjects

    servers = [url.strip() for value in args.nats for url in value.split(",") if url.strip()]
    holder = args.compactor_id or f"compactor-{secrets.token_hex(4)}"

    async def run() -> None:
        snapshots = MeshSnapshots(args.mongodb, args.mongodb_database, args.mongodb_write_concern)
        await snapshots.open()
        nc = await asyncio.wait_for(nats.connect(servers=servers, max_reconnect_attempts=-1), 10)
        cache = RedisCache(args.redis, args.redis_ttl) if args.redis else None
        compactor = Compactor(
            nc, snapshots, args.nats_stream, Subjects(args.nats_subject_prefix), holder, cache,
            history_interval=args.history_interval, history_keep=args.history_keep,
        )
        task = asyncio.create_task(compactor.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await nc.close()
            await snapshots.close()
            if cache is not None:
                await cache.close()
            logging.getLogger("yrelay.compactor").info(
                "compactor stopped holder=%s compactions=%d", holder, compactor.compactions
            )

    try:
        asyncio.run(run())
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"yrelay compact: cannot connect: {exc!r}", file=sys.stderr)
        raise SystemExit(2) from None


def _add_storage_options(parser: argparse.ArgumentParser, defaults: RelayConfig) -> None:
    parser.add_argument("--data-dir", type=Path, default=defaults.data_dir,
                        help="folder of the SQLite file (default ./%(default)s)")
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default=defaults.sqlite_synchronous,
                        help="FULL survives power loss, NORMAL only process crashes (default %(default)s)")
    parser.add_argument("--sqlite-commit-delay-ms", type=_non_negative_float,
                        default=defaults.sqlite_commit_delay * 1000,
                        help="milliseconds the writer gathers updates into one commit and fsync "
                             "(default %(default)s)")
    storage = parser.add_argument_group("MongoDB storage (replaces the SQLite file)")
    storage.add_argument("--mongodb", default=None, metavar="URL",
                         help="MongoDB connection string, e.g. mongodb://127.0.0.1:27017")
    storage.add_argument("--mongodb-database", default=defaults.mongodb_database,
                         help="database name (default %(default)s)")
    storage.add_argument("--mongodb-write-concern", default=defaults.mongodb_write_concern,
                         help="write concern w: 'majority' or a number of members (default %(default)s)")


def _run_backup(args: argparse.Namespace) -> None:
    import asyncio

    from persistence import StoreUnavailable

    from .app import default_store
    from .backup import BackupFormatError, export_documents, import_documents

    config = RelayConfig(
        data_dir=args.data_dir,
        sqlite_synchronous=args.sqlite_synchronous,
        sqlite_commit_delay=args.sqlite_commit_delay_ms / 1000,
        mongodb_url=args.mongodb,
        mongodb_database=args.mongodb_database,
        mongodb_write_concern=args.mongodb_write_concern,
    )

    async def run() -> int:
        store = default_store(config)
        await store.open()
        try:
            if args.command == "export":
                return await export_documents(store, args.folder)
            return await import_documents(store, args.folder)
        finally:
            await store.close()

    try:
        count = asyncio.run(run())
    except (StoreUnavailable, BackupFormatError, OSError) as exc:
        print(f"yrelay {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    verb = "exported to" if args.command == "export" else "imported from"
    print(f"{count} documents {verb} {args.folder}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``yrelay`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "token":
        _issue_token(args)
        return
    if args.command == "compact":
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        _run_compactor(args)
        return
    if args.command in ("export", "import"):
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        _run_backup(args)
        return
    if args.command == "serve":
        config = RelayConfig(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            max_message_size=args.max_message_size,
            unload_grace=args.unload_grace,
            compact_updates=args.compact_updates,
            compact_bytes=args.compact_bytes,
            send_queue_bytes=args.send_queue_bytes,
            sync_chunk_bytes=args.sync_chunk_bytes,
            awareness_timeout=args.awareness_timeout,
            awareness_batch_interval=args.awareness_batch_ms / 1000,
            shutdown_grace=args.shutdown_grace,
            history_interval=args.history_interval,
            history_keep=args.history_keep,
            websocket_compression=args.websocket_compression,
            server=args.server,
            sqlite_synchronous=args.sqlite_synchronous,
            sqlite_commit_delay=args.sqlite_commit_delay_ms / 1000,
            mongodb_url=args.mongodb,
            mongodb_database=args.mongodb_database,
            mongodb_write_concern=args.mongodb_write_concern,
            redis_url=args.redis,
            redis_ttl=args.redis_ttl,
            run_compactor=not args.no_compactor,
            auth=_auth_settings(args),
            allow_anonymous=args.allow_anonymous,
            auth_timeout=args.auth_timeout,
            log_level=args.log_level,
        )
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        from .mesh.node import MeshConfig, new_relay_id
        from .server import run

        mesh_config = None
        servers = [url.strip() for value in args.nats for url in value.split(",") if url.strip()]
        if servers:
            mesh_config = MeshConfig(
                servers=servers,
                relay_id=args.relay_id or new_relay_id(),
                subject_prefix=args.nats_subject_prefix,
                stream_name=args.nats_stream,
                stream_replicas=args.nats_replicas,
                stream_storage=args.nats_storage,
                max_message_size=config.max_message_size,
                peer_timeout=args.peer_timeout,
            )
        run(config, mesh_config)
