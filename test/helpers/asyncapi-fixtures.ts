/**
 * Streetlights AsyncAPI documents used by the AsyncAPI tests, in 2.6 and 3.0, with the same
 * messages: `lightMeasured` (payload in a separate file, `schemas/light-measured.yaml`) on one
 * channel, and two command messages (`turnOn`, and an inline one with messageId/name) on another.
 */

export const lightMeasuredPayload = `type: object
required: [id, lumens, sentAt]
properties:
  id: {type: integer, minimum: 0}
  lumens: {type: integer, minimum: 0}
  sentAt: {type: string, format: date-time}
`;

export const streetlights26 = `asyncapi: '2.6.0'
info:
  title: Streetlights
  version: '1.0.0'
channels:
  light/measured:
    publish:
      message:
        $ref: '#/components/messages/lightMeasured'
  light/commands:
    subscribe:
      message:
        oneOf:
          - $ref: '#/components/messages/turnOn'
          - messageId: dimLight
            name: dim
            payload:
              type: object
              required: [percentage]
              properties:
                percentage: {type: integer, minimum: 0, maximum: 100}
components:
  messages:
    lightMeasured:
      name: lightMeasured
      payload:
        $ref: 'schemas/light-measured.yaml'
    turnOn:
      messageId: turnOnCommand
      payload:
        type: object
        required: [command]
        properties:
          command: {type: string, enum: ['on']}
`;

export const streetlights30 = `asyncapi: 3.0.0
info:
  title: Streetlights
  version: '1.0.0'
channels:
  lightingMeasured:
    address: light/measured
    messages:
      lightMeasured:
        $ref: '#/components/messages/lightMeasured'
  lightCommands:
    address: light/commands
    messages:
      turnOn:
        $ref: '#/components/messages/turnOn'
      dimLight:
        name: dim
        payload:
          type: object
          required: [percentage]
          properties:
            percentage: {type: integer, minimum: 0, maximum: 100}
operations:
  receiveLightMeasured:
    action: receive
    channel:
      $ref: '#/channels/lightingMeasured'
components:
  messages:
    lightMeasured:
      name: lightMeasured
      payload:
        $ref: 'schemas/light-measured.yaml'
    turnOn:
      name: turnOnCommand
      payload:
        type: object
        required: [command]
        properties:
          command: {type: string, enum: ['on']}
`;

/** The channel names of the fixtures, per version: [measured, commands]. */
export const channelsOf = {
  '2.6': { measured: 'light/measured', commands: 'light/commands' },
  '3.0': { measured: 'lightingMeasured', commands: 'lightCommands' },
} as const;

export const documentOf = { '2.6': streetlights26, '3.0': streetlights30 } as const;
