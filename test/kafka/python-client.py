"""
Debian's python3-kafka (kafka-python) as a third, independent Kafka client for the tests.
  produce BOOTSTRAP TOPIC COMPRESSION   values on stdin, one per line; prints one JSON line per record:
                                        {"ok": true, "partition": P, "offset": O} or {"ok": false, "error": "..."}
  consume BOOTSTRAP TOPIC GROUP COUNT   group-consumes COUNT records (or until 20 s pass); prints a JSON list of values
  commit BOOTSTRAP TOPIC GROUP PARTITION OFFSET
                                        commits OFFSET for the group without joining it (as an operator's
                                        offset reset does while the group has no member); prints "ok"
Run with /usr/bin/python3 (the system python that has the package).
"""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka.errors import KafkaError


def produce(bootstrap, topic, compression):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if compression == "none" else compression,
        retries=0,
        request_timeout_ms=15000,
    )
    for line in sys.stdin:
        value = line.rstrip("\n").encode()
        try:
            meta = producer.send(topic, value).get(timeout=20)
            print(json.dumps({"ok": True, "partition": meta.partition, "offset": meta.offset}), flush=True)
        except KafkaError as err:
            print(json.dumps({"ok": False, "error": "%s: %s" % (type(err).__name__, err)}), flush=True)
    producer.close(timeout=10)


def consume(bootstrap, topic, group, count):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    values = []
    for message in consumer:
        values.append(message.value.decode())
        if len(values) >= count:
            break
    consumer.commit()
    consumer.close()
    print(json.dumps(values), flush=True)


def commit(bootstrap, topic, group, partition, offset):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    consumer.commit({TopicPartition(topic, partition): OffsetAndMetadata(offset, None)})
    consumer.close()
    print("ok", flush=True)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "produce":
        produce(*args)
    elif command == "consume":
        consume(args[0], args[1], args[2], int(args[3]))
    elif command == "commit":
        commit(args[0], args[1], args[2], int(args[3]), int(args[4]))
    else:
        sys.exit("unknown command %s" % command)
