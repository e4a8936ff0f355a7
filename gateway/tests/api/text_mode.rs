//! grpc-web text mode (`application/grpc-web-text`: base64 frames, the official grpc-web
//! JavaScript client's default): a unary RPC forwarded to TaskService and the gateway's own
//! LiveService stream, over HTTP/1.1 as a browser sends them, with the frames encoded and
//! decoded here by the grpc-web protocol's rules.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message;
use taskmesh_proto::{
    gateway::v1::{StreamChangesRequest, StreamChangesResponse, stream_changes_response::Event},
    task::v1::{CreateTaskRequest, CreateTaskResponse, Task},
};
use taskmesh_testkit::{Mesh, MeshOptions};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A grpc-web-text request body: one data frame of `message`, base64.
fn text_request(message: &impl Message) -> String {
    let payload = message.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    BASE64.encode(frame)
}

/// The bytes of a grpc-web-text response so far: the server encodes each chunk on its own
/// (with its padding), so every 4-character group decodes independently.
fn decode_text(text: &[u8]) -> Vec<u8> {
    text.chunks(4)
        .flat_map(|group| BASE64.decode(group).expect("base64 groups"))
        .collect()
}

/// The frames in `bytes`: (flags, payload); `0x80` marks the trailer frame. An incomplete
/// last frame is left out.
fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        if rest.len() < 5 + length {
            break;
        }
        frames.push((rest[0], rest[5..5 + length].to_vec()));
        rest = &rest[5 + length..];
    }
    frames
}

fn post(mesh: &Mesh, path: &str, body: String) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}{path}", mesh.gateway_url()))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .header(
            "authorization",
            format!("Bearer {}", taskmesh_testkit::token("alice")),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_stream_calls_work_in_text_mode() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // Unary, forwarded to TaskService.
    let request = CreateTaskRequest {
        task: Some(Task {
            title: "Text mode".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let path = "/taskmesh.task.v1.TaskService/CreateTask";
    let response = client
        .request(post(&mesh, path, text_request(&request)))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let unary = frames(&decode_text(&body));
    assert_eq!(unary.len(), 2, "a message and the trailers: {unary:?}");
    let created = CreateTaskResponse::decode(unary[0].1.as_slice()).unwrap();
    assert_eq!(created.task.unwrap().title, "Text mode");
    let trailers = String::from_utf8_lossy(&unary[1].1).to_ascii_lowercase();
    assert_eq!(unary[1].0, 0x80);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // A server stream, served by the gateway itself: its first message says the replay is
    // done (`caught_up`), and it stays open.
    let path = "/taskmesh.gateway.v1.LiveService/StreamChanges";
    let request = text_request(&StreamChangesRequest::default());
    let response = client.request(post(&mesh, path, request)).await.unwrap();
    let mut body = response.into_body();
    let mut received = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frame = body.frame().await.expect("the stream stays open").unwrap();
            if let Some(data) = frame.data_ref() {
                received.extend_from_slice(data);
            }
            let whole = received.len() - received.len() % 4;
            if let Some((0, message)) = frames(&decode_text(&received[..whole])).into_iter().next()
            {
                return StreamChangesResponse::decode(message.as_slice()).unwrap();
            }
        }
    })
    .await
    .expect("a first message within 20 s");
    assert!(matches!(first.event, Some(Event::CaughtUp(_))), "{first:?}");
    assert!(!first.cursor.is_empty());
}
