/*
 * A real Kafka-protocol cluster for the tests: librdkafka's mock cluster (in-process brokers on
 * ephemeral localhost ports). Prints its bootstrap address on the first line of stdout, then reads
 * commands from stdin, one per line, answering each with "ok" or "error <reason>":
 *   down <id|-1>           the broker closes its connections and refuses new ones (-1: every broker)
 *   up <id|-1>             it accepts connections again
 *   topic <name> <parts>   create a topic with that many partitions (auto-created topics get 4)
 *   errors <api> <n> <err> the next n requests of API key <api> (e.g. 11 JoinGroup) fail with error code <err>
 *   broker-errors <id> <api> <n> <err>  the same, for requests broker <id> receives only (e.g. 0 Produce)
 *   clear <api>            requests of API key <api> no longer fail: the errors still pushed by `errors` are dropped
 *   leader <name> <part> <id>  broker <id> leads that partition from now on
 *   rtt <id> <ms>          broker <id> sends each answer <ms> later from now on (0: at once again);
 *                          it still takes each request as it arrives (a produced record is stored then)
 *   missing <name>         Metadata answers UNKNOWN_TOPIC_OR_PARTITION for the topic, as a cluster with
 *                          auto.create.topics.enable=false does for a topic that does not exist
 *   found <name>           Metadata answers the topic again (created on first use), as once it was created
 * Exits when stdin closes, so a test runner that dies takes its cluster with it. With MOCK_DEBUG set
 * (e.g. "mock"), librdkafka's debug log goes to stderr: one line per request the brokers receive.
 * Build: gcc -O1 -o mock-cluster mock-cluster.c -lrdkafka
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  char errstr[512], line[512], name[256];
  int brokers = argc > 1 ? atoi(argv[1]) : 1, id, parts, api, n, code;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (getenv("MOCK_DEBUG")) rd_kafka_conf_set(conf, "debug", getenv("MOCK_DEBUG"), errstr, sizeof(errstr));
  /* The handle only hosts the mock cluster's threads; it never connects anywhere. */
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (!rk) { fprintf(stderr, "rd_kafka_new: %s\n", errstr); return 1; }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers > 0 ? brokers : 1);
  if (!mc) { fprintf(stderr, "rd_kafka_mock_cluster_new failed\n"); return 1; }
  printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  fflush(stdout);
  while (fgets(line, sizeof(line), stdin)) {
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (sscanf(line, "down %d", &id) == 1) err = rd_kafka_mock_broker_set_down(mc, id);
    else if (sscanf(line, "up %d", &id) == 1) err = rd_kafka_mock_broker_set_up(mc, id);
    else if (sscanf(line, "topic %255s %d", name, &parts) == 2) err = rd_kafka_mock_topic_create(mc, name, parts, 1);
    else if (sscanf(line, "broker-errors %d %d %d %d", &id, &api, &n, &code) == 4 && n > 0 && n <= 1000) {
      /* Each push adds to the broker's stack of errors for that API: n pushes, n failed requests. */
      err = RD_KAFKA_RESP_ERR_NO_ERROR;
      for (int i = 0; i < n && !err; i++) err = rd_kafka_mock_broker_push_request_error_rtts(mc, id, (int16_t)api, 1, (rd_kafka_resp_err_t)code, 0);
    } else if (sscanf(line, "rtt %d %d", &id, &n) == 2 && n >= 0) err = rd_kafka_mock_broker_set_rtt(mc, id, n);
    else if (sscanf(line, "leader %255s %d %d", name, &parts, &id) == 3) err = rd_kafka_mock_partition_set_leader(mc, name, parts, id);
    else if (sscanf(line, "missing %255s", name) == 1) {
      rd_kafka_mock_topic_set_error(mc, name, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
      err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    else if (sscanf(line, "found %255s", name) == 1) {
      rd_kafka_mock_topic_set_error(mc, name, RD_KAFKA_RESP_ERR_NO_ERROR);
      err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    else if (sscanf(line, "clear %d", &api) == 1) {
      rd_kafka_mock_clear_request_errors(mc, (int16_t)api);
      err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    else if (sscanf(line, "errors %d %d %d", &api, &n, &code) == 3 && n > 0 && n <= 1000) {
      rd_kafka_resp_err_t codes[1000];
      for (int i = 0; i < n; i++) codes[i] = (rd_kafka_resp_err_t)code;
      rd_kafka_mock_push_request_errors_array(mc, (int16_t)api, (size_t)n, codes);
      err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    if (err) printf("error %s\n", rd_kafka_err2str(err));
    else printf("ok\n");
    fflush(stdout);
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
