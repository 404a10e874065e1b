import { kafkaBroker } from './brokers/kafka.js';
import { memoryBroker } from './brokers/memory.js';
import { amqpBroker } from './brokers/amqp.js';
import { mqttBroker } from './brokers/mqtt.js';
import { natsBroker } from './brokers/nats.js';
import { httpListener } from './listeners/http.js';
import { websocketListener } from './listeners/websocket.js';
import { KindRegistry } from './registry.js';
import { authStep } from './steps/auth.js';
import { cloudeventStep } from './steps/cloudevent.js';
import { filterStep } from './steps/filter.js';
import { headersStep } from './steps/headers.js';
import { ratelimitStep } from './steps/ratelimit.js';
import { transformStep } from './steps/transform.js';
import { validateStep } from './steps/validate.js';

/** Every kind eventgate ships. */
export function defaultRegistry(): KindRegistry {
  return new KindRegistry()
    .broker(memoryBroker)
    .broker(kafkaBroker)
    .broker(mqttBroker)
    .broker(amqpBroker)
    .broker(natsBroker)
    .listener(httpListener)
    .listener(websocketListener)
    .step(validateStep)
    .step(filterStep)
    .step(transformStep)
    .step(headersStep)
    .step(authStep)
    .step(ratelimitStep)
    .step(cloudeventStep);
}
