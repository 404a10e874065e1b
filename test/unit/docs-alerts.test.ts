import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import { repoRoot } from '../helpers/gateway.js';
import { runProcess } from '../helpers/kafka.js';
import { tempDir } from '../helpers/reaper.js';

/** The alert rules docs/operations.md gives, as a Prometheus rule file (the `### Alerts` block). */
function alertRules(): string {
  const page = readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8');
  const block = /^### Alerts\n[\s\S]*?```yaml\n([\s\S]*?)```/m.exec(page);
  assert.ok(block, "operations.md's `### Alerts` section has no yaml block");
  return block[1]!;
}

/** Two instances scraped as the page's scrape config does (job eventgate), the series per minute. */
const series = (metric: string, instance: string, values: string, labels = ''): { series: string; values: string } => ({
  series: `${metric}{job="eventgate",instance="${instance}"${labels ? `,${labels}` : ''}}`,
  values,
});

describe("docs/operations.md's alerts", () => {
  // promtool (Debian's prometheus package) evaluates the rules as Prometheus does, templates included:
  // an annotation naming a label the expression aggregates away renders empty, which only
  // evaluating the rule shows.
  it('fire for the instance, route or broker in trouble, and their summaries name it', async () => {
    const dir = tempDir('docs-alerts');
    writeFileSync(join(dir, 'rules.yml'), alertRules());
    const g1 = 'gw-1:9000';
    const g2 = 'gw-2:9000';
    const tests = {
      rule_files: ['rules.yml'],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: [
            // g1's nats credsFile expires in a day, g2's (a newer file) in 30.
            series('eventgate_broker_credentials_expires_in_seconds', g1, '86400+0x30', 'broker="events"'),
            series('eventgate_broker_credentials_expires_in_seconds', g2, '2592000+0x30', 'broker="events"'),
            series('eventgate_ready', g1, '1+0x30'),
            series('eventgate_ready', g2, '0+0x30'),
            series('eventgate_config_last_reload_successful', g1, '0+0x30'),
            series('eventgate_config_last_reload_successful', g2, '1+0x30'),
            // Route orders: 1 in 20 of the messages of both instances fail, all of them on g1.
            series('eventgate_route_messages_total', g1, '0+100x30', 'route="orders",outcome="received"'),
            series('eventgate_route_messages_total', g1, '0+10x30', 'route="orders",outcome="failed"'),
            series('eventgate_route_messages_total', g2, '0+100x30', 'route="orders",outcome="received"'),
            series('eventgate_route_messages_total', g2, '0+0x30', 'route="orders",outcome="failed"'),
            series('eventgate_route_stalled_messages', g1, '0+0x30', 'route="audit"'),
            series('eventgate_route_stalled_messages', g2, '1+0x30', 'route="audit"'),
          ],
          alert_rule_test: [
            {
              eval_time: '20m',
              alertname: 'EventgateCredentialsExpiring',
              exp_alerts: [
                {
                  exp_labels: { broker: 'events', instance: g1, job: 'eventgate' },
                  exp_annotations: { summary: `eventgate ${g1}: the credentials of broker events expire in 1d 0h 0m 0s` },
                },
              ],
            },
            {
              eval_time: '20m',
              alertname: 'EventgateNotReady',
              exp_alerts: [
                {
                  exp_labels: { instance: g2, job: 'eventgate' },
                  exp_annotations: { summary: `eventgate ${g2} is not ready: a listener is not bound, a broker is not connected or a consume route is down (see /readyz)` },
                },
              ],
            },
            {
              eval_time: '20m',
              alertname: 'EventgateConfigReloadFailed',
              exp_alerts: [
                {
                  exp_labels: { instance: g1, job: 'eventgate' },
                  exp_annotations: { summary: `eventgate ${g1} rejected its new config; the old one keeps serving (see /admin/status)` },
                },
              ],
            },
            {
              eval_time: '20m',
              alertname: 'EventgateRouteFailing',
              exp_alerts: [{ exp_labels: { route: 'orders' }, exp_annotations: { summary: 'route orders: 5% of messages fail' } }],
            },
            {
              eval_time: '20m',
              alertname: 'EventgateRouteStalled',
              exp_alerts: [{ exp_labels: { route: 'audit' }, exp_annotations: { summary: 'route audit keeps retrying a message (see /admin/status: routes[].stalled)' } }],
            },
          ],
        },
      ],
    };
    writeFileSync(join(dir, 'tests.yml'), stringify(tests));
    const run = await runProcess('promtool', ['test', 'rules', join(dir, 'tests.yml')], '', 60000);
    assert.equal(run.code, 0, `promtool test rules failed:\n${run.stdout}\n${run.stderr}`);
  });
});
