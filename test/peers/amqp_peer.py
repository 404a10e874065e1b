#!/usr/bin/python3
"""An independent AMQP 0-9-1 client for the tests (Debian's python3-pika).

  amqp_peer.py URL publish EXCHANGE ROUTING_KEY   one message per stdin line: {"body": str | "bodyBase64": str, "headers": {...}, "timestamp": int,
                                                   "contentType": str, "contentEncoding": str}
                                                   (a header value {"$decimal": "3.14"}, {"$timestamp": seconds}, {"$bytes": base64} or
                                                   {"$uint64": "digits"}, {"$int64": "digits"} ('l') or {"$rawTimestamp": "digits"} is sent as that AMQP field type, at any depth; JSON's own types as theirs)
  amqp_peer.py URL consume QUEUE COUNT TIMEOUT_S  prints COUNT messages as JSON lines, acking each
  amqp_peer.py URL declare QUEUE EXCHANGE KEY     declares a durable queue bound to EXCHANGE with KEY
  amqp_peer.py URL count QUEUE                     prints the queue's ready message count
  amqp_peer.py URL consumers QUEUE                 prints the queue's consumer count (a passive declare's answer)
  amqp_peer.py URL declared-as QUEUE ARGUMENTS     fails unless the server has QUEUE, durable, with ARGUMENTS (JSON): a passive
                                                   declare, then a declare with them, which RabbitMQ refuses (406 PRECONDITION_FAILED,
                                                   `inequivalent arg`) for a queue it has otherwise; prints "ok"
  amqp_peer.py URL declare-exchange EXCHANGE TYPE  declares a durable exchange
  amqp_peer.py URL delete-exchange EXCHANGE        deletes an exchange (and so its bindings)
  amqp_peer.py URL delete QUEUE                    deletes a queue (its messages and bindings with it; its consumers are cancelled)
  amqp_peer.py URL ping                            prints "ok" once a connection and a channel are open (readiness)
  amqp_peer.py serve                               the same commands as JSON lines on stdin, each answered by a JSON line
                                                   (test/helpers/peers.ts keeps such processes for a test file's calls)

Publishing uses publisher confirms, so a line printed "ok" is a message the broker took.
"""
import base64
import datetime
import decimal
import json
import sys
import time

import struct

import pika
from pika import data as pika_data


class Uint64(int):
    """An unsigned 64-bit field ('L'): RabbitMQ takes and passes it on; pika has no type for it."""


class RawTimestamp(int):
    """A timestamp field ('T') of any 64-bit value: pika's goes through datetime, which ends at year 9999."""


_encode_value = pika_data.encode_value


def _encode_with_uint64(pieces, value):
    if isinstance(value, Uint64):
        pieces.append(b"L" + struct.pack(">Q", value))
        return 9
    if isinstance(value, RawTimestamp):
        pieces.append(b"T" + struct.pack(">Q", value))
        return 9
    return _encode_value(pieces, value)


pika_data.encode_value = _encode_with_uint64


def typed(value):
    """A header value from JSON, with the AMQP field types JSON has no spelling for."""
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$decimal" in value:
            return decimal.Decimal(value["$decimal"])
        if len(value) == 1 and "$timestamp" in value:
            return datetime.datetime.fromtimestamp(value["$timestamp"], datetime.timezone.utc)
        if len(value) == 1 and "$uint64" in value:
            return Uint64(int(value["$uint64"]))
        if len(value) == 1 and "$int64" in value:
            return int(value["$int64"])
        if len(value) == 1 and "$rawTimestamp" in value:
            return RawTimestamp(int(value["$rawTimestamp"]))
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: typed(v) for k, v in value.items()}
    return value


def execute(url, command, args, lines, out):
    """Runs one command on a connection of its own; `lines` are publish's messages, `out` takes what it prints."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        run_command(connection.channel(), command, args, lines, out)
    finally:
        # Also after a failure: a serving process outlives the call, and so would the connection.
        if connection.is_open:
            connection.close()


def shown(value):
    """A header value as JSON: bytes as text when UTF-8 (else {"$bytes": base64}), decimals and timestamps as their text."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_command(channel, command, args, lines, out):
    if command == "publish":
        exchange, key = args
        channel.confirm_delivery()
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            given = msg.get("properties") or {}
            props = pika.BasicProperties(headers=typed(msg.get("headers")) or None, delivery_mode=2, content_type=msg.get("contentType"),
                                         content_encoding=msg.get("contentEncoding"),
                                         message_id=given.get("messageId"), correlation_id=given.get("correlationId"),
                                         reply_to=given.get("replyTo"), type=given.get("type"), app_id=given.get("appId"),
                                         user_id=given.get("userId"), priority=given.get("priority"), expiration=given.get("expiration"),
                                         timestamp=None if msg.get("timestamp") is None else int(msg["timestamp"]))
            body = base64.b64decode(msg["bodyBase64"]) if "bodyBase64" in msg else msg["body"].encode()
            channel.basic_publish(exchange=exchange, routing_key=key, body=body, properties=props, mandatory=False)
            out("ok")
    elif command == "consume":
        queue, count, timeout = args[0], int(args[1]), float(args[2])
        seen = 0
        for method, props, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            headers = {k: shown(v) for k, v in (props.headers or {}).items()}
            out(json.dumps({"routingKey": method.routing_key, "exchange": method.exchange, "redelivered": method.redelivered,
                            "headers": headers, "body": body.decode(errors="replace"),
                            "headerTypes": {k: type(v).__name__ for k, v in (props.headers or {}).items()},
                            "bodyBase64": base64.b64encode(body).decode(),
                            "properties": {"contentType": props.content_type, "contentEncoding": props.content_encoding,
                                           "deliveryMode": props.delivery_mode,
                                           "messageId": props.message_id, "timestamp": props.timestamp,
                                           "correlationId": props.correlation_id, "replyTo": props.reply_to,
                                           "type": props.type, "appId": props.app_id, "userId": props.user_id,
                                           "priority": props.priority, "expiration": props.expiration}}))
            channel.basic_ack(method.delivery_tag)
            seen += 1
            if seen >= count:
                break
        channel.cancel()
    elif command == "declare":
        queue, exchange, key = args
        channel.queue_declare(queue, durable=True)
        if exchange:
            channel.queue_bind(queue, exchange, routing_key=key)
        out("ok")
    elif command == "declare-exchange":
        channel.exchange_declare(args[0], exchange_type=args[1], durable=True)
        out("ok")
    elif command == "delete-exchange":
        channel.exchange_delete(args[0])
        out("ok")
    elif command == "delete":
        channel.queue_delete(args[0])
        out("ok")
    elif command == "hold":
        # An exclusive consumer on the queue (another consumer is refused meanwhile: 403 ACCESS_REFUSED,
        # in exclusive use), said with a message on the marker queue once in place, until a message
        # reaches it (taken) or the timeout passes.
        queue, marker, timeout = args[0], args[1], float(args[2])
        released = []
        channel.basic_consume(queue, lambda ch, method, props, body: (ch.basic_ack(method.delivery_tag), released.append(body)), exclusive=True)
        channel.basic_publish(exchange="", routing_key=marker, body=b"held")
        deadline = time.monotonic() + timeout
        while not released and time.monotonic() < deadline:
            channel.connection.process_data_events(time_limit=0.1)
        out("released" if released else "timed out")
    elif command == "ping":
        out("ok")
    elif command == "count":
        out(str(channel.queue_declare(args[0], passive=True).method.message_count))
    elif command == "consumers":
        out(str(channel.queue_declare(args[0], passive=True).method.consumer_count))
    elif command == "declared-as":
        # Passive first: a declare alone would make a missing queue, and pass.
        channel.queue_declare(args[0], passive=True)
        channel.queue_declare(args[0], durable=True, arguments=typed(json.loads(args[1])))
        out("ok")
    else:
        raise ValueError(f"unknown command {command}")


def serve():
    """One request a line ({"url", "command", "args", "lines"}), one answer a line ({"lines"} or
    {"error"}), until stdin ends: a test file's calls share the process, not Python's start."""
    for request in sys.stdin:
        if not request.strip():
            continue
        printed = []
        try:
            r = json.loads(request)
            execute(r["url"], r["command"], r["args"], r.get("lines", []), printed.append)
            answer = {"lines": printed}
        except Exception as err:  # noqa: BLE001 - every failure is the caller's to see
            answer = {"error": f"{type(err).__name__}: {err}", "lines": printed}
        print(json.dumps(answer), flush=True)


def main():
    if sys.argv[1:] == ["serve"]:
        serve()
        return
    url, command, *args = sys.argv[1:]
    execute(url, command, args, sys.stdin if command == "publish" else [], lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
