#!/usr/bin/env node
// KafkaJS producer for corelog's cluster failover test.
//
//   node kafkajs_failover.js <request.json>
//
// request.json: { brokers: [...], topic, partition, output, stopFile, idempotent }
// Sends one record at a time (key k<seq>, value v<seq>, acks=-1) until
// stopFile exists, appending one JSON line per record to output:
//   {"seq": n, "p": partition, "o": offset, "t": ms}  or  {"seq": n, "error": "..."}
// Exits 0 when stopped; any line with "error" is a failure for the test.
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))

const kafka = new Kafka({
  clientId: 'corelog-failover-kafkajs',
  brokers: req.brokers,
  connectionTimeout: 3000,
  requestTimeout: 15000,
  retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 3000 },
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, level, label, log }) => {
    process.stderr.write(`[kafkajs ${label} ${namespace}] ${JSON.stringify(log)}\n`)
  },
})

async function main() {
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    idempotent: !!req.idempotent,
    maxInFlightRequests: 1,
    metadataMaxAge: 2000,
  })
  await producer.connect()
  const out = fs.openSync(req.output, 'a')
  let seq = 0
  try {
    while (!fs.existsSync(req.stopFile)) {
      const msg = { key: `k${seq}`, value: `v${seq}`, partition: req.partition || 0 }
      try {
        const res = await producer.send({ topic: req.topic, acks: -1, timeout: 15000, messages: [msg] })
        const r = res[0]
        if (r.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(r)}`)
        fs.writeSync(out, JSON.stringify({ seq, p: r.partition, o: Number(r.baseOffset), t: Date.now() }) + '\n')
      } catch (e) {
        fs.writeSync(out, JSON.stringify({ seq, error: String(e && e.stack || e), t: Date.now() }) + '\n')
      }
      seq += 1
    }
  } finally {
    fs.closeSync(out)
    await producer.disconnect()
  }
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e && e.stack ? e.stack : e)
    process.exit(1)
  },
)
