#!/usr/bin/env bash
# Installs the Debian packages the test suite needs when they are missing:
#   librdkafka-dev  librdkafka's mock Kafka cluster (a real Kafka-protocol broker for tests), gcc links against it
#   gcc, libc6-dev  compile test/kafka/mock-cluster.c (once per run, cached in test/.build)
#   kcat            an independent Kafka client for interop tests
#   python3-kafka   kafka-python, a third Kafka client (the kafka listener's interop tests, /usr/bin/python3)
#   chromium        headless browser for the admin dashboard and EventSource (SSE) tests
#   curl            `curl -N`, an event-stream client that is not a browser (SSE tests)
#   mosquitto, mosquitto-clients   an MQTT broker, and mosquitto_pub/_sub as independent MQTT peers
#   rabbitmq-server, python3-pika  an AMQP 0-9-1 broker, and an independent Python client (test/peers/amqp_peer.py)
#   nats-server     a NATS server with JetStream (the tests talk the NATS text protocol to it themselves)
#   nginx, libnginx-mod-nchan  the fan-out benchmark's C baseline (nginx + Nchan, one worker)
#   prometheus      its promtool evaluates docs/operations.md's alert rules (test/unit/docs-alerts)
# Needs root (CI runs as root); `apt-get update` runs once, only when something is missing.
set -euo pipefail

missing=()
[ -f /usr/include/librdkafka/rdkafka_mock.h ] || missing+=(librdkafka-dev)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
/usr/bin/python3 -c 'import kafka' >/dev/null 2>&1 || missing+=(python3-kafka)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
/usr/bin/python3 -c 'import pika' >/dev/null 2>&1 || missing+=(python3-pika)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# gcc only recommends the C library headers, and --no-install-recommends skips them.
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "ensure-system-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "ensure-system-deps: need root to run: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
