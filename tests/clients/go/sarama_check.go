// sarama_check drives a corelog broker with Shopify's sarama (the Debian
// package golang-github-shopify-sarama-dev): ClusterAdmin topic creation, an
// idempotent acks=all SyncProducer with keyed records, a consumer group that
// commits, and a read-back of the committed offsets. It prints one JSON line
// and exits non-zero on any failure.
//
// Usage: sarama_check BOOTSTRAP TOPIC GROUP COUNT
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type result struct {
	Produced  int              `json:"produced"`
	Consumed  int              `json:"consumed"`
	Acked     map[string]int64 `json:"acked"`     // value -> offset
	Partition map[string]int32 `json:"partition"` // value -> partition
	Got       map[string]int64 `json:"got"`       // value -> offset consumed
	Committed map[int32]int64  `json:"committed"`
	End       map[int32]int64  `json:"end"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "sarama_check: "+format+"\n", args...)
	os.Exit(1)
}

type handler struct {
	mu     sync.Mutex
	got    map[string]int64
	want   int
	doneCh chan struct{}
	once   sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.got[string(m.Value)] = m.Offset
		n := len(h.got)
		h.mu.Unlock()
		s.MarkMessage(m, "")
		if n >= h.want {
			h.once.Do(func() { close(h.doneCh) })
		}
	}
	return nil
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: sarama_check BOOTSTRAP TOPIC GROUP COUNT")
	}
	brokers, topic, group := []string{os.Args[1]}, os.Args[2], os.Args[3]
	count, err := strconv.Atoi(os.Args[4])
	if err != nil {
		fail("COUNT: %v", err)
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.ClientID = "sarama-check"
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Producer.Return.Successes = true
	cfg.Producer.Retry.Max = 10
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	cfg.Net.MaxOpenRequests = 1
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	// sarama 1.22's default commit is OffsetCommit v1 (no retention set),
	// which Kafka 4.0 dropped; corelog still answers it, as Kafka 3.x does.
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 1 * time.Second

	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		fail("cluster admin: %v", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		fail("CreateTopic: %v", err)
	}

	res := result{Acked: map[string]int64{}, Partition: map[string]int32{}, Committed: map[int32]int64{}, End: map[int32]int64{}}
	prod, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		fail("producer: %v", err)
	}
	for i := 0; i < count; i++ {
		v := fmt.Sprintf("v%d", i)
		p, off, err := prod.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i%10)), Value: sarama.StringEncoder(v),
		})
		if err != nil {
			fail("SendMessage %d: %v", i, err)
		}
		res.Acked[v], res.Partition[v] = off, p
		res.Produced++
	}
	if err := prod.Close(); err != nil {
		fail("producer close: %v", err)
	}

	cg, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		fail("consumer group: %v", err)
	}
	h := &handler{got: map[string]int64{}, want: count, doneCh: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "sarama_check: Consume: %v\n", err)
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	select {
	case <-h.doneCh:
	case <-time.After(60 * time.Second):
		h.mu.Lock()
		n := len(h.got)
		h.mu.Unlock()
		fail("consumer group got %d of %d records in 60 s", n, count)
	}
	time.Sleep(1 * time.Second) // one more commit interval
	cancel()
	if err := cg.Close(); err != nil {
		fail("consumer group close: %v", err)
	}
	res.Got = h.got
	res.Consumed = len(h.got)

	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		fail("client: %v", err)
	}
	parts, err := client.Partitions(topic)
	if err != nil {
		fail("partitions: %v", err)
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	if err != nil {
		fail("ListConsumerGroupOffsets: %v", err)
	}
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			fail("GetOffset %d: %v", p, err)
		}
		res.End[p] = end
		if b := offsets.GetBlock(topic, p); b != nil {
			res.Committed[p] = b.Offset
		}
	}
	_ = client.Close()
	_ = admin.Close()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
