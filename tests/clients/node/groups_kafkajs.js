#!/usr/bin/env node
// KafkaJS consumer-group driver for corelog's group tests (test_groups_clients.py).
//
//   node groups_kafkajs.js <request.json>
//
// request: { brokers, topic, group, partitions, phase1: {p: n}, phase2PerPartition,
//            timeoutMs, output }
//
// 1. consumer c1 joins alone (consumer.run / eachMessage, autoCommit) and consumes
//    phase1 (already produced by the test); the driver waits until the group's
//    committed offsets (admin.fetchOffsets) equal phase1.
// 2. consumer c2 joins the same group; the driver waits until the latest
//    GROUP_JOIN of each consumer shows disjoint, non-empty assignments covering
//    every partition.
// 3. the driver produces phase2PerPartition records to every partition and waits
//    until c1 and c2 together consumed them; then both disconnect (commit + leave).
//
// output: { phase1Consumed: {c1: [[p,o]...]}, committed1: {p: o},
//           joinsAtSplit / joinsAfterPhase2 / joins (at exit): {c1: [...], c2: [...]},
//           produced2: [[p,o]...], consumed2: {c1: [[p,o]...], c2: [[p,o]...]},
//           committed2: {p: o}, describe: {...} }
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const deadline = Date.now() + (req.timeoutMs || 120000)

const kafka = new Kafka({
  clientId: 'corelog-groups-kafkajs',
  brokers: req.brokers,
  connectionTimeout: 5000,
  requestTimeout: 30000,
  retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 },
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, level, label, log }) => {
    process.stderr.write(`[kafkajs ${label} ${namespace}] ${JSON.stringify(log)}\n`)
  },
})

const sleep = ms => new Promise(r => setTimeout(r, ms))

async function waitFor(what, cond, interval = 50) {
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(interval)
  }
}

function makeConsumer(name, state) {
  const c = kafka.consumer({
    groupId: req.group,
    sessionTimeout: 6000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 },
  })
  state.joins[name] = []
  state.consumed[name] = []
  c.on(c.events.GROUP_JOIN, e => {
    state.joins[name].push({
      at: Date.now(),
      memberId: e.payload.memberId,
      leaderId: e.payload.leaderId,
      isLeader: e.payload.isLeader,
      assignment: e.payload.memberAssignment,
      protocol: e.payload.groupProtocol,
    })
  })
  c.on(c.events.CRASH, e => {
    state.crashes.push({ name, error: String(e.payload.error && e.payload.error.stack) })
  })
  return c
}

async function start(c, name, state) {
  await c.connect()
  await c.subscribe({ topic: req.topic, fromBeginning: true })
  await c.run({
    eachMessage: async ({ partition, message }) => {
      state.consumed[name].push([partition, Number(message.offset)])
    },
  })
}

async function committed(admin) {
  const r = await admin.fetchOffsets({ groupId: req.group, topics: [req.topic] })
  const out = {}
  for (const p of r[0].partitions) out[p.partition] = Number(p.offset)
  return out
}

function lastAssignment(state, name) {
  const j = state.joins[name]
  if (!j.length) return null
  return (j[j.length - 1].assignment[req.topic] || []).slice().sort((a, b) => a - b)
}

async function main() {
  const state = { joins: {}, consumed: {}, crashes: [] }
  const out = {}
  const admin = kafka.admin()
  await admin.connect()
  const c1 = makeConsumer('c1', state)
  const c2 = makeConsumer('c2', state)
  try {
    // 1. c1 alone consumes phase 1 and commits it
    await start(c1, 'c1', state)
    const want1 = Object.values(req.phase1).reduce((a, b) => a + b, 0)
    await waitFor(`c1 to consume ${want1} phase-1 records`, () => state.consumed.c1.length >= want1)
    const expect1 = Object.fromEntries(Object.entries(req.phase1).map(([p, n]) => [p, n]))
    await waitFor('phase-1 offsets committed', async () => {
      const c = await committed(admin)
      out.committed1 = c
      return Object.entries(expect1).every(([p, n]) => c[p] === n)
    }, 200)
    out.phase1Consumed = { c1: state.consumed.c1.slice() }
    const n1 = state.consumed.c1.length

    // 2. c2 joins; wait for a split covering every partition
    await start(c2, 'c2', state)
    await waitFor('c1 and c2 to split the partitions', () => {
      const a = lastAssignment(state, 'c1')
      const b = lastAssignment(state, 'c2')
      if (!a || !b || !a.length || !b.length) return false
      const all = new Set([...a, ...b])
      return all.size === req.partitions && a.length + b.length === req.partitions
    })
    await sleep(1000) // both must have started fetching their new partitions
    out.joinsAtSplit = JSON.parse(JSON.stringify(state.joins))

    // 3. produce phase 2 and wait until the two consumers together got it all
    const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: false })
    await producer.connect()
    const produced2 = []
    const messages = []
    for (let i = 0; i < req.phase2PerPartition; i++) {
      for (let p = 0; p < req.partitions; p++) messages.push({ partition: p, value: `phase2-${p}-${i}` })
    }
    const res = await producer.send({ topic: req.topic, acks: -1, messages })
    await producer.disconnect()
    for (const r of res) {
      if (r.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(r)}`)
    }
    // one request: each partition's records have consecutive offsets from baseOffset
    for (const r of res) {
      const base = Number(r.baseOffset)
      for (let i = 0; i < req.phase2PerPartition; i++) produced2.push([r.partition, base + i])
    }
    out.produced2 = produced2
    const key = ([p, o]) => `${p}:${o}`
    const wanted = new Set(produced2.map(key))
    await waitFor('phase-2 records consumed by c1+c2', () => {
      const got = new Set([...state.consumed.c1.slice(n1), ...state.consumed.c2].map(key))
      for (const k of wanted) if (!got.has(k)) return false
      return true
    })
    await sleep(500)
    out.consumed2 = { c1: state.consumed.c1.slice(n1), c2: state.consumed.c2.slice() }
    out.joinsAfterPhase2 = JSON.parse(JSON.stringify(state.joins))
    const d = await admin.describeGroups([req.group])
    out.describe = d.groups.map(g => ({ state: g.state, protocol: g.protocol, members: g.members.length }))
  } finally {
    await c1.disconnect().catch(() => {})
    await c2.disconnect().catch(() => {})
  }
  out.committed2 = await committed(admin)
  await admin.disconnect()
  out.joins = state.joins
  out.crashes = state.crashes
  fs.writeFileSync(req.output, JSON.stringify(out))
}

main().then(
  () => process.exit(0),
  e => {
    process.stderr.write(`groups_kafkajs failed: ${e && e.stack}\n`)
    process.exit(1)
  }
)
