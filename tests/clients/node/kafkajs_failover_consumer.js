#!/usr/bin/env node
// KafkaJS group consumer for corelog's cluster failover test.
//
//   node kafkajs_failover_consumer.js <request.json>
//
// request.json: { brokers: [...], topic, groupId, output, stopFile }
// Consumes `topic` in group `groupId` from the earliest offset, appending one
// JSON line per record to output: {"p": partition, "o": offset, "v": value};
// commits as KafkaJS does by default. Exits 0 once stopFile exists.
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))

const kafka = new Kafka({
  clientId: 'corelog-failover-kafkajs-consumer',
  brokers: req.brokers,
  connectionTimeout: 3000,
  requestTimeout: 15000,
  retry: { retries: 20, initialRetryTime: 200, maxRetryTime: 3000 },
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, level, label, log }) => {
    process.stderr.write(`[kafkajs ${label} ${namespace}] ${JSON.stringify(log)}\n`)
  },
})

async function main() {
  const consumer = kafka.consumer({
    groupId: req.groupId,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
    metadataMaxAge: 2000,
    maxWaitTimeInMs: 200,
  })
  await consumer.connect()
  await consumer.subscribe({ topic: req.topic, fromBeginning: true })
  const out = fs.openSync(req.output, 'a')
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const line = { p: partition, o: Number(message.offset), v: message.value.toString() }
      fs.writeSync(out, JSON.stringify(line) + '\n')
    },
  })
  while (!fs.existsSync(req.stopFile)) {
    await new Promise(r => setTimeout(r, 100))
  }
  await consumer.disconnect()
  fs.closeSync(out)
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e && e.stack ? e.stack : e)
    process.exit(1)
  },
)
