"""``ao-appliance ctl``: call the node's operator gRPC API (docs/api.md, "Operator gRPC API").

Every answer is printed as JSON lines on stdout (bytes as standard base64). Exit codes: 0 done,
1 the node answered with an error (its code and message go to stderr as JSON), 2 bad usage or
the node cannot be reached (including a refused TLS handshake).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from appliance.cli.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from appliance.config import parse_host_port
from appliance.errors import UsageError

MAX_MESSAGE = 1 << 30
CONNECT_SECONDS = 3.0


def _host_port(text: str) -> str:
    try:
        parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(sub: Any) -> None:
    """Register the ``ctl`` sub-command and one sub-command per RPC."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "ctl", help="call the operator gRPC API of a running node",
        description="Call the operator gRPC API; answers are JSON lines.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--address", type=_host_port, help="HOST:PORT of listen.grpc")
    target.add_argument("--unix", type=Path, help="path of listen.grpc_unix")
    parser.add_argument("--ca", type=Path, help="CA certificate that signed the node's cert")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM)")
    parser.add_argument("--key", type=Path, help="client private key (PEM)")
    parser.add_argument("--server-name", help="name to verify the node's certificate against "
                        "(default: the host of --address)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="deadline of each call in seconds (stream: none)")
    rpcs = parser.add_subparsers(dest="rpc", required=True)
    rpcs.add_parser("status", help="GetStatus").set_defaults(call=_status)
    att = rpcs.add_parser("attestation", help="GetAttestation with a fresh nonce")
    att.add_argument("--nonce", help="hex, 1-64 bytes (default: 32 random bytes)")
    att.add_argument("--out", type=Path, help="also write the raw Attestation item here")
    att.set_defaults(call=_attestation)
    for name, rpc in (("add-module", "AddModule"), ("spawn", "Spawn"), ("send", "SendMessage")):
        item = rpcs.add_parser(name, help=f"{rpc}: submit a signed ANS-104 item")
        item.add_argument("file", help="the raw data item ('-' reads stdin)")
        item.set_defaults(call=_submit, method=rpc)
    res = rpcs.add_parser("result", help="GetResult")
    _ids(res, message=True)
    res.add_argument("--out", type=Path, help="also write the raw Result item here")
    res.set_defaults(call=_result)
    stream = rpcs.add_parser("stream", help="StreamResults (follows until --limit or Ctrl-C)")
    _ids(stream)
    stream.add_argument("--from", dest="from_slot", type=int, default=0, help="first slot")
    stream.add_argument("--limit", type=int, default=0, help="stop after N results")
    stream.set_defaults(call=_stream)
    dry = rpcs.add_parser("dry-run", help="DryRun a message on the latest state")
    _ids(dry)
    dry.add_argument("--data", help="message Data")
    dry.add_argument("--tag", "--tags", dest="tags", action="append", default=[],
                     metavar="NAME=VALUE", help="a message tag (repeatable)")
    dry.add_argument("--owner", help="message Owner")
    dry.add_argument("--from", dest="from_address", help="message From (default: Owner)")
    dry.add_argument("--message", type=Path,
                     help="JSON message file {Tags: [{name, value}], Data, Owner, From, Anchor}")
    dry.set_defaults(call=_dry_run)
    procs = rpcs.add_parser("processes", help="ListProcesses")
    procs.add_argument("--page-size", type=int, default=0)
    procs.add_argument("--page-token", default="")
    procs.add_argument("--all", action="store_true", help="follow next_page_token to the end")
    procs.set_defaults(call=_processes)
    ckpt = rpcs.add_parser("checkpoint", help="ForceCheckpoint")
    _ids(ckpt)
    ckpt.set_defaults(call=_checkpoint)
    rpcs.add_parser("services", help="services and methods, via server reflection") \
        .set_defaults(call=_services)
    parser.set_defaults(func=ctl)


def _ids(parser: argparse.ArgumentParser, *, message: bool = False) -> None:
    """``--process`` (and ``--message``) as ``verify`` takes them; the older positional form
    still works."""
    parser.add_argument("--process", dest="process_id", help="process id")
    parser.add_argument("process", nargs="?", help=argparse.SUPPRESS)
    if message:
        parser.add_argument("--message", dest="message_id", help="message id")
        parser.add_argument("message", nargs="?", help=argparse.SUPPRESS)
    parser.set_defaults(ids_parser=parser, wants_message=message)


def _resolve_ids(args: argparse.Namespace) -> None:
    parser: argparse.ArgumentParser | None = getattr(args, "ids_parser", None)
    if parser is None:
        return
    args.process = args.process_id or args.process
    if not args.process:
        parser.error("--process is required")
    if args.wants_message:
        args.message = args.message_id or args.message
        if not args.message:
            parser.error("--message is required")


# --- output ------------------------------------------------------------------------------------

def _emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _value(value: Any) -> Any:
    if isinstance(value, Message):
        return to_json(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def to_json(message: Message) -> dict[str, Any]:
    """A message as a JSON object: proto field names, integers as numbers, bytes as base64."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = {k: _value(v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(v) for v in value]
        elif not field.has_presence or message.HasField(field.name):
            out[field.name] = _value(value)
    return out


def _with_result(message: Message) -> dict[str, Any]:
    out = to_json(message)
    out["result"] = json.loads(out.pop("result_json"))
    return out


# --- channel -----------------------------------------------------------------------------------

def _read(path: Path, what: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _channel(args: argparse.Namespace) -> Any:
    tls = [args.ca, args.cert, args.key]
    options = [("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.max_send_message_length", MAX_MESSAGE)]
    if args.unix is not None:
        if any(tls):
            raise UsageError("--ca/--cert/--key apply to --address; the unix socket is plaintext")
        return grpc.insecure_channel(f"unix:{args.unix.absolute()}", options=options)
    if not any(tls):
        return grpc.insecure_channel(args.address, options=options)
    if not all(tls):
        raise UsageError("mTLS needs all of --ca, --cert and --key")
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca, "CA"), private_key=_read(args.key, "key"),
        certificate_chain=_read(args.cert, "certificate"))
    return grpc.secure_channel(args.address, credentials, options=options)


def _stub(channel: Any) -> Any:
    from appliance.rpc.gen import operator_pb2_grpc  # noqa: PLC0415 - keeps ctl --help fast

    return operator_pb2_grpc.OperatorStub(channel)


def _pb() -> Any:
    from appliance.rpc.gen import operator_pb2  # noqa: PLC0415 - keeps ctl --help fast

    return operator_pb2


# --- calls -------------------------------------------------------------------------------------

def _status(channel: Any, args: argparse.Namespace) -> None:
    _emit(to_json(_stub(channel).GetStatus(_pb().GetStatusRequest(), timeout=args.timeout)))


def _attestation(channel: Any, args: argparse.Namespace) -> None:
    try:
        nonce = bytes.fromhex(args.nonce) if args.nonce is not None else os.urandom(32)
    except ValueError:
        raise UsageError("--nonce must be hex") from None
    answer = _stub(channel).GetAttestation(_pb().GetAttestationRequest(nonce=nonce),
                                           timeout=args.timeout)
    if args.out is not None:
        args.out.write_bytes(answer.item)
    out = to_json(answer)
    out["nonce_hex"] = nonce.hex()
    _emit(out)


def _submit(channel: Any, args: argparse.Namespace) -> None:
    raw = _read(Path(args.file), "item")
    method = getattr(_stub(channel), args.method)
    _emit(to_json(method(_pb().SubmitItemRequest(item=raw), timeout=args.timeout)))


def _result(channel: Any, args: argparse.Namespace) -> None:
    answer = _stub(channel).GetResult(_pb().GetResultRequest(
        process_id=args.process, message_id=args.message), timeout=args.timeout)
    if args.out is not None:
        args.out.write_bytes(answer.result_item)
    _emit(_with_result(answer))


def _stream(channel: Any, args: argparse.Namespace) -> None:
    if args.from_slot < 0 or args.limit < 0:
        raise UsageError("--from and --limit cannot be negative")
    entries = _stub(channel).StreamResults(_pb().StreamResultsRequest(
        process_id=args.process, from_slot=args.from_slot, limit=args.limit))
    for entry in entries:
        _emit(_with_result(entry))


def _dry_message(args: argparse.Namespace) -> dict[str, Any]:
    message: dict[str, Any] = {}
    if args.message is not None:
        try:
            message = json.loads(_read(args.message, "message"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError(f"{args.message} is not a JSON message") from None
        if not isinstance(message, dict):
            raise UsageError(f"{args.message} must hold a JSON object")
    tags = list(message.get("Tags") or [])
    for text in args.tags:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"--tag wants NAME=VALUE, got {text!r}")
        tags.append({"name": name, "value": value})
    for key, value in (("Data", args.data), ("Owner", args.owner), ("From", args.from_address)):
        if value is not None:
            message[key] = value
    message["Tags"] = tags
    return message


def _dry_run(channel: Any, args: argparse.Namespace) -> None:
    pb = _pb()
    message = _dry_message(args)
    try:
        tags = [pb.Tag(name=str(t["name"]), value=str(t["value"])) for t in message["Tags"]]
    except (KeyError, TypeError):
        raise UsageError("each tag must be an object {name, value}") from None
    request = pb.DryRunRequest(process_id=args.process, tags=tags,
                               data=str(message.get("Data", "")),
                               owner=str(message.get("Owner", "")),
                               from_address=str(message.get("From", "")),
                               anchor=str(message.get("Anchor", "")))
    answer = _stub(channel).DryRun(request, timeout=args.timeout)
    _emit({"process_id": args.process, "result": json.loads(answer.result_json)})


def _processes(channel: Any, args: argparse.Namespace) -> None:
    token = args.page_token
    while True:
        page = _stub(channel).ListProcesses(_pb().ListProcessesRequest(
            page_size=max(0, args.page_size), page_token=token), timeout=args.timeout)
        for summary in page.processes:
            _emit(to_json(summary))
        token = page.next_page_token
        if not token:
            return
        if not args.all:
            _emit({"next_page_token": token})
            return


def _checkpoint(channel: Any, args: argparse.Namespace) -> None:
    answer = _stub(channel).ForceCheckpoint(_pb().ForceCheckpointRequest(
        process_id=args.process), timeout=args.timeout)
    out = to_json(answer)
    out["process_id"] = args.process
    _emit(out)


def _methods(pool: DescriptorPool, service: str) -> Iterable[str]:
    try:
        return [m.name for m in pool.FindServiceByName(service).methods]
    except KeyError:
        return []


def _services(channel: Any, _args: argparse.Namespace) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: PLC0415
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(database)
    for service in sorted(database.get_services()):
        _emit({"service": service, "methods": list(_methods(pool, service))})


def _fail(code: int, value: dict[str, Any]) -> int:
    sys.stderr.write(json.dumps(value, ensure_ascii=False) + "\n")
    return code


def _reachable(args: argparse.Namespace) -> str | None:
    """Why the node's socket cannot even be connected to, or ``None`` (a quick TCP or unix
    connect, so a dead port fails at once instead of after gRPC's reconnect back-off)."""
    try:
        if args.unix is not None:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(CONNECT_SECONDS)
                sock.connect(str(args.unix))
        else:
            host, port = parse_host_port(args.address)
            socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def ctl(args: argparse.Namespace) -> int:
    """Connect, make the call, print the answer."""
    _resolve_ids(args)
    where = f"unix:{args.unix}" if args.unix is not None else args.address
    problem = _reachable(args)
    if problem is not None:
        return _fail(EXIT_USAGE, {"error": "unreachable", "target": where,
                                  "message": f"cannot connect: {problem}"})
    channel = _channel(args)
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=min(args.timeout, CONNECT_SECONDS))
        except grpc.FutureTimeoutError:
            return _fail(EXIT_USAGE, {"error": "unreachable", "target": where,
                                      "message": "no gRPC connection (not a gRPC listener, "
                                                 "or TLS handshake refused)"})
        try:
            args.call(channel, args)
        except grpc.RpcError as exc:
            return _fail(EXIT_FAILED, {"code": exc.code().name, "message": exc.details()})
    return EXIT_OK
