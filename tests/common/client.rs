//! A blocking Kafka client over one `TcpStream`: one request at a time, or
//! pipelined with `send` / `recv`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, FetchRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::Record;

use super::*;

/// One connection speaking the Kafka wire protocol, blocking, one request at a time
/// unless the caller pipelines with `send` / `recv`.
pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

/// A fetch answer for one partition.
#[derive(Debug)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

/// A ListOffsets answer for one partition.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    pub error_code: i16,
    pub offset: i64,
    pub timestamp: i64,
}

/// A produce answer for one partition.
#[derive(Debug)]
pub struct Produced {
    pub error_code: i16,
    pub base_offset: i64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self::from_stream(stream)
    }

    /// Wraps a socket that has already been used for hand-written bytes.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Encodes header + body with its size prefix.
    pub fn frame<R: Request>(api_version: i16, correlation_id: i32, req: &R) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(api_version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("corelog-tests")))
            .encode(&mut buf, R::header_version(api_version))
            .expect("encode header");
        req.encode(&mut buf, api_version).expect("encode body");
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Sends one request; returns its correlation id.
    pub fn send<R: Request>(&mut self, api_version: i16, req: &R) -> i32 {
        self.correlation_id += 1;
        let frame = Self::frame(api_version, self.correlation_id, req);
        self.stream.write_all(&frame).expect("send request");
        self.correlation_id
    }

    /// Reads one response frame (without its size prefix).
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let len = i32::from_be_bytes(prefix);
        assert!(
            (4..=256 << 20).contains(&len),
            "implausible response size {len}"
        );
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Reads the response to `correlation_id`, decoded at `api_version`.
    pub fn recv<R: Request>(&mut self, api_version: i16, correlation_id: i32) -> R::Response {
        let mut frame = self.read_frame().expect("read response");
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(api_version))
            .expect("decode response header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses arrive in request order"
        );
        let body = R::Response::decode(&mut frame, api_version).expect("decode response body");
        assert_eq!(frame.remaining(), 0, "trailing bytes after response body");
        body
    }

    /// Like `call`, but a closed or reset connection is an `Err`, not a panic.
    pub fn try_call<R: Request>(
        &mut self,
        api_version: i16,
        req: &R,
    ) -> std::io::Result<R::Response> {
        self.correlation_id += 1;
        let frame = Self::frame(api_version, self.correlation_id, req);
        self.stream.write_all(&frame)?;
        let mut resp = self.read_frame()?;
        let header = ResponseHeader::decode(&mut resp, R::Response::header_version(api_version))
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
        assert_eq!(header.correlation_id, self.correlation_id);
        R::Response::decode(&mut resp, api_version)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e.to_string()))
    }

    pub fn call<R: Request>(&mut self, api_version: i16, req: &R) -> R::Response {
        let id = self.send(api_version, req);
        self.recv::<R>(api_version, id)
    }

    pub fn api_versions(&mut self, version: i16) -> ApiVersionsResponse {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("corelog-tests"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        self.call(version, &req)
    }

    pub fn metadata(&mut self, topics: &[&str], allow_auto_create: bool) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(allow_auto_create);
        self.call(METADATA_V, &req)
    }

    /// Creates topics; returns each one's error code in request order.
    pub fn create_topics(&mut self, topics: Vec<CreatableTopic>) -> Vec<i16> {
        let names: Vec<TopicName> = topics.iter().map(|t| t.name.clone()).collect();
        let req = CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(10_000);
        let resp = self.call(CREATE_TOPICS_V, &req);
        names
            .iter()
            .map(|n| {
                resp.topics
                    .iter()
                    .find(|t| &t.name == n)
                    .unwrap_or_else(|| panic!("no CreateTopics result for {n:?}"))
                    .error_code
            })
            .collect()
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &[(&str, &str)],
    ) -> i16 {
        self.create_topics(vec![creatable(name, partitions, replication, configs)])[0]
    }

    pub fn produce(&mut self, topic: &str, partition: i32, acks: i16, records: Bytes) -> Produced {
        self.try_produce(topic, partition, acks, records)
            .expect("produce response")
    }

    /// Produce; a dropped connection is an `Err`.
    pub fn try_produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        records: Bytes,
    ) -> std::io::Result<Produced> {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let resp = self.try_call(PRODUCE_V, &req)?;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.index, partition);
        Ok(Produced {
            error_code: p.error_code,
            base_offset: p.base_offset,
        })
    }

    /// Produces and insists it succeeded; returns the base offset.
    pub fn produce_ok(&mut self, topic: &str, partition: i32, records: Bytes) -> i64 {
        let p = self.produce(topic, partition, -1, records);
        assert_eq!(p.error_code, code::NONE, "produce to {topic}-{partition}");
        p.base_offset
    }

    pub fn fetch_request(
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
    ) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])])
    }

    pub fn fetch_with(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
    ) -> Fetched {
        let req = Self::fetch_request(topic, partition, offset, max_wait_ms, min_bytes, max_bytes);
        let resp = self.call(FETCH_V, &req);
        assert_eq!(resp.error_code, code::NONE, "fetch top-level error");
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.partition_index, partition);
        Fetched {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records: p.records.clone().unwrap_or_default(),
        }
    }

    /// An immediate fetch (no long poll).
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64, max_bytes: i32) -> Fetched {
        self.fetch_with(topic, partition, offset, 0, 0, max_bytes)
    }

    /// Fetches from `from` until `count` records are read, checking offsets are
    /// contiguous. Small `max_bytes` so reads cross batch and segment boundaries.
    pub fn fetch_all(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        count: usize,
    ) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut next = from;
        let deadline = Instant::now() + IO_TIMEOUT;
        while out.len() < count {
            assert!(
                Instant::now() < deadline,
                "fetch_all: only {} of {count} records",
                out.len()
            );
            let f = self.fetch(topic, partition, next, 2048);
            assert_eq!(
                f.error_code,
                code::NONE,
                "fetch {topic}-{partition} at {next}"
            );
            for r in decode_records(f.records) {
                if r.offset < next {
                    continue; // a batch may start before the requested offset
                }
                assert_eq!(r.offset, next, "offsets are contiguous");
                next += 1;
                out.push(r);
            }
        }
        out
    }

    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> Listed {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let resp = self.call(LIST_OFFSETS_V, &req);
        let p = &resp.topics[0].partitions[0];
        Listed {
            error_code: p.error_code,
            offset: p.offset,
            timestamp: p.timestamp,
        }
    }

    /// The log end offset, asserting no error.
    pub fn latest(&mut self, topic: &str, partition: i32) -> i64 {
        let l = self.list_offset(topic, partition, LATEST);
        assert_eq!(l.error_code, code::NONE);
        l.offset
    }

    pub fn earliest(&mut self, topic: &str, partition: i32) -> i64 {
        let l = self.list_offset(topic, partition, EARLIEST);
        assert_eq!(l.error_code, code::NONE);
        l.offset
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn creatable(
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )
}

/// Waits for the peer to close: true on EOF or reset, false if bytes arrive
/// or nothing happens within `IO_TIMEOUT`.
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Writes ignoring errors: the broker may close before all bytes land.
pub fn write_best_effort(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
}
