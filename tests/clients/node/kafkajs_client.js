#!/usr/bin/env node
// KafkaJS driver for corelog's real-client compatibility tests.
//
//   node kafkajs_client.js <request.json>
//
// request.json: { "cmd": "create-topic" | "produce" | "consume", "brokers": ["127.0.0.1:PORT"], ... }
//   create-topic: topic, partitions
//   produce:      topic, compression ("none"|"gzip"), input (JSON file of messages), output (JSON file)
//                 message: { k: b64, v: b64, h: [[name, b64], ...], ts: ms|null }
//                 output:  { reports: [[partition, offset], ...] } in input order
//   consume:      topic, counts { partition: n }, output (JSON file), timeoutMs
//                 output:  { partitions: { p: [ {o, k, v, h, ts, tsType} ... ] } }
//
// KafkaJS's consumer only works through a consumer group (no assign()), and
// corelog has no group coordinator yet. So "manual assignment" here is the
// same machinery KafkaJS's consumer runs underneath: its cluster/broker
// objects send Fetch requests and its RecordBatch decoder decodes them.
'use strict'

const fs = require('fs')
const { Kafka, CompressionTypes, Partitioners, logLevel } = require('kafkajs')

const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))

const b64 = buf => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = s => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))

const kafka = new Kafka({
  clientId: 'corelog-compat-kafkajs',
  brokers: req.brokers,
  connectionTimeout: 5000,
  requestTimeout: 60000,
  retry: { retries: 6, initialRetryTime: 200, maxRetryTime: 5000 },
  logLevel: logLevel.WARN,
  // keep stdout clean: log to stderr
  logCreator: () => ({ namespace, level, label, log }) => {
    process.stderr.write(`[kafkajs ${label} ${namespace}] ${JSON.stringify(log)}\n`)
  },
})

async function createTopic() {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({
      waitForLeaders: true,
      timeout: 30000,
      topics: [{ topic: req.topic, numPartitions: req.partitions, replicationFactor: 1 }],
    })
    const md = await admin.fetchTopicMetadata({ topics: [req.topic] })
    const parts = md.topics[0].partitions.map(p => p.partitionId).sort()
    console.log(JSON.stringify({ created, partitions: parts }))
    if (parts.length !== req.partitions) throw new Error(`topic has ${parts.length} partitions`)
  } finally {
    await admin.disconnect()
  }
}

async function produce() {
  const input = JSON.parse(fs.readFileSync(req.input, 'utf8'))
  const compression = {
    none: CompressionTypes.None,
    gzip: CompressionTypes.GZIP,
  }[req.compression || 'none']
  if (compression === undefined) throw new Error(`unsupported compression ${req.compression}`)

  const admin = kafka.admin()
  await admin.connect()
  const md = await admin.fetchTopicMetadata({ topics: [req.topic] })
  await admin.disconnect()
  const partitionMetadata = md.topics[0].partitions
  // KafkaJS's own default (murmur2, Java-compatible) partitioner, applied up
  // front so each message's partition is known; the broker's per-partition
  // baseOffset then gives every message's offset.
  const partitioner = Partitioners.DefaultPartitioner()

  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    idempotent: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  })
  await producer.connect()
  const reports = new Array(input.length)
  const CHUNK = 500
  try {
    for (let start = 0; start < input.length; start += CHUNK) {
      const chunk = input.slice(start, start + CHUNK)
      const messages = chunk.map(m => {
        const msg = { key: unb64(m.k), value: unb64(m.v), headers: {} }
        for (const [name, val] of m.h) msg.headers[name] = unb64(val)
        if (m.ts !== null && m.ts !== undefined) msg.timestamp = String(m.ts)
        msg.partition = partitioner({ topic: req.topic, partitionMetadata, message: msg })
        return msg
      })
      // one awaited send at a time: per partition, offsets follow array order
      const result = await producer.send({ topic: req.topic, acks: -1, compression, timeout: 60000, messages })
      const base = {}
      for (const r of result) {
        if (r.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(r)}`)
        base[r.partition] = BigInt(r.baseOffset)
      }
      const seen = {}
      messages.forEach((msg, i) => {
        const p = msg.partition
        if (base[p] === undefined) throw new Error(`no produce result for partition ${p}`)
        const n = seen[p] || 0
        seen[p] = n + 1
        reports[start + i] = [p, Number(base[p] + BigInt(n))]
      })
    }
  } finally {
    await producer.disconnect()
  }
  fs.writeFileSync(req.output, JSON.stringify({ reports }))
}

function privateCluster() {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  if (!sym) throw new Error('kafkajs internals changed: no createCluster symbol')
  return kafka[sym]({ metadataMaxAge: 300000, allowAutoTopicCreation: false })
}

async function consume() {
  const cluster = privateCluster()
  await cluster.connect()
  const counts = {}
  for (const [p, n] of Object.entries(req.counts)) counts[Number(p)] = n
  const partitions = Object.keys(counts).map(Number)
  const out = {}
  const next = {}
  for (const p of partitions) {
    out[p] = []
    next[p] = 0n
  }
  const deadline = Date.now() + (req.timeoutMs || 90000)
  try {
    await cluster.addTargetTopic(req.topic)
    await cluster.refreshMetadata()
    while (partitions.some(p => out[p].length < counts[p])) {
      if (Date.now() > deadline) {
        const got = Object.fromEntries(partitions.map(p => [p, out[p].length]))
        throw new Error(`timed out: got ${JSON.stringify(got)} want ${JSON.stringify(counts)}`)
      }
      const leaders = cluster.findLeaderForPartitions(req.topic, partitions)
      for (const [nodeId, parts] of Object.entries(leaders)) {
        const broker = await cluster.findBroker({ nodeId })
        const resp = await broker.fetch({
          replicaId: -1,
          isolationLevel: 1,
          maxWaitTime: 200,
          minBytes: 1,
          maxBytes: 8 * 1024 * 1024,
          topics: [{
            topic: req.topic,
            partitions: parts.map(p => ({ partition: p, fetchOffset: next[p].toString(), maxBytes: 1024 * 1024 })),
          }],
        })
        for (const t of resp.responses) {
          for (const pr of t.partitions) {
            if (pr.errorCode !== 0) throw new Error(`fetch error ${pr.errorCode} on partition ${pr.partition}`)
            const p = pr.partition
            for (const m of pr.messages) {
              if (m.isControlRecord) continue
              const off = BigInt(m.offset)
              if (off < next[p]) continue // batch started before our fetch offset
              if (off !== next[p] && out[p].length > 0) {
                // keep going: the comparison in Python reports the gap precisely
              }
              const h = []
              for (const [name, val] of Object.entries(m.headers || {})) {
                if (Array.isArray(val)) for (const v of val) h.push([name, b64(v)])
                else h.push([name, b64(val)])
              }
              out[p].push({
                o: Number(off),
                k: b64(m.key),
                v: b64(m.value),
                h,
                ts: Number(m.timestamp),
                tsType: m.batchContext ? m.batchContext.timestampType : null,
              })
              next[p] = off + 1n
            }
          }
        }
      }
    }
  } finally {
    await cluster.disconnect()
  }
  fs.writeFileSync(req.output, JSON.stringify({ partitions: out }))
}

const cmds = { 'create-topic': createTopic, produce, consume }
if (!cmds[req.cmd]) {
  console.error(`unknown cmd ${req.cmd}`)
  process.exit(2)
}
cmds[req.cmd]().then(
  () => process.exit(0),
  err => {
    console.error(`kafkajs_client ${req.cmd} failed: ${err && err.stack ? err.stack : err}`)
    process.exit(1)
  }
)
