//! Hostile clients (issue 17): what one user, or someone without a token, sends cannot hurt
//! anyone else. Every test here failed before the fix it names.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::future::join_all;
use prost_types::{FieldMask, Timestamp};
use taskmesh_platform::grpc::{MAX_MESSAGE_BYTES, MAX_VIOLATIONS, field_violations};
use taskmesh_proto::{
    audit::v1::{ListActivityRequest, audit_service_client::AuditServiceClient},
    recurrence::v1::{ValidateRuleRequest, recurrence_service_client::RecurrenceServiceClient},
    reminder::v1::{ListRemindersRequest, reminder_service_client::ReminderServiceClient},
    task::v1::{
        CreateTaskRequest, Due, GetTaskRequest, ListTagsRequest, ListTasksRequest, Reminder, Task,
        UpdateTaskRequest, due, reminder,
    },
};
use taskmesh_testkit::{Mesh, MeshOptions, authed, with_token};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

use crate::{live::new_task, tasks_grpc, tasks_web};

/// `user`'s GetTask of `name` in a loop through the gateway (alternating native gRPC and
/// grpc-web, each with a 3 s deadline) until `stop`; the failures seen. Prints the calls' p50 and p99 under `label`
/// (figures for the notes, not assertions).
async fn keep_reading(
    mesh: &Mesh,
    user: &str,
    name: String,
    label: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tonic::Status> {
    let mut native = tasks_grpc(mesh).await;
    let mut web = tasks_web(mesh);
    let mut failures = Vec::new();
    let mut took = Vec::new();
    while !*stop.borrow() || took.len() < 20 {
        // A deadline far above a GetTask's few milliseconds, far below the seconds it took
        // when another user's flood held the async workers.
        let request = || {
            let mut request = authed(user, GetTaskRequest { name: name.clone() });
            request.set_timeout(Duration::from_secs(3));
            request
        };
        let start = std::time::Instant::now();
        let result = if took.len() % 2 == 0 {
            native.get_task(request()).await.map(drop)
        } else {
            web.get_task(request()).await.map(drop)
        };
        took.push(start.elapsed());
        if let Err(status) = result {
            failures.push(status);
        }
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{label}: {user}'s {} GetTask calls: p50 {:?}, p99 {:?}",
        took.len(),
        at(0.5),
        at(0.99)
    );
    failures
}

/// A due in 2033 in `zone` (any text: validation is what some tests are after).
fn due_in(zone: impl Into<String>) -> Due {
    Due {
        value: Some(due::Value::Time(Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        })),
        time_zone: zone.into(),
    }
}

/// Checks an error a huge bad input got: INVALID_ARGUMENT, bounded in count and size.
fn assert_bounded(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = field_violations(status);
    assert!(!violations.is_empty());
    assert!(
        violations.len() <= MAX_VIOLATIONS + 1,
        "{}",
        violations.len()
    );
    assert!(status.message().len() <= MAX_MESSAGE_BYTES);
    assert!(
        status.details().len() < 20_000,
        "{} bytes of details",
        status.details().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_about_huge_inputs_are_bounded_and_another_users_calls_go_on() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let bobs = new_task(&mesh, "bob", "bob's").await;
    let alices = new_task(&mesh, "alice", "alice's").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let bob = keep_reading(&mesh, "bob", bobs.name.clone(), "huge bad inputs", stopped);
    let alice = async {
        let mut tasks = tasks_grpc(&mesh).await;
        let mut recurrence = RecurrenceServiceClient::new(mesh.gateway_channel().await.unwrap());
        for _ in 0..5 {
            // 10,000 bad update-mask paths.
            let paths = (0..10_000).map(|i| format!("no_such_field_{i}")).collect();
            let status = tasks
                .update_task(authed(
                    "alice",
                    UpdateTaskRequest {
                        task: Some(Task {
                            name: alices.name.clone(),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask { paths }),
                    },
                ))
                .await
                .unwrap_err();
            assert_bounded(&status);
            // A 10 KB time zone.
            let status = tasks
                .create_task(authed(
                    "alice",
                    CreateTaskRequest {
                        task: Some(Task {
                            title: "t".into(),
                            due: Some(due_in("Z".repeat(10_000))),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap_err();
            assert_bounded(&status);
            // A message over the size limit is refused before it is parsed.
            let status = tasks
                .create_task(authed(
                    "alice",
                    CreateTaskRequest {
                        task: Some(Task {
                            title: "x".repeat(600 * 1024),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
            // 10,000 bad weekday codes.
            let byday = vec!["XX"; 10_000].join(",");
            let response = recurrence
                .validate_rule(authed(
                    "alice",
                    ValidateRuleRequest {
                        rrule: format!("FREQ=WEEKLY;BYDAY={byday}"),
                        dtstart: None,
                        time_zone: "Europe/Berlin".into(),
                    },
                ))
                .await;
            match response {
                Ok(response) => {
                    let response = response.into_inner();
                    assert!(!response.valid);
                    assert!(format!("{response:?}").len() < 20_000);
                }
                Err(status) => assert_bounded(&status),
            }
        }
        stop.send(true).unwrap();
    };
    let ((), failures) = tokio::join!(alice, bob);
    assert!(failures.is_empty(), "bob's calls failed: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_method_names_do_not_become_metric_labels() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let channel = mesh.gateway_channel().await.unwrap();
    for i in 0..300 {
        let path = if i % 2 == 0 {
            format!("/taskmesh.task.v1.TaskService/MadeUp{i}x")
        } else {
            format!("/made.up{i}x.Service/Call")
        };
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<(), (), _>(
                authed("alice", ()),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        // tonic's own UNIMPLEMENTED carries an ErrorInfo: a known service's unknown method
        // (answered by the service) and an unknown service (answered by the gateway's
        // router; `UNKNOWN_SERVICE` when it also serves the web app).
        assert_eq!(
            taskmesh_platform::grpc::reason(&status).as_deref(),
            Some("GRPC_UNIMPLEMENTED"),
            "{status:?}"
        );
    }
    let text = taskmesh_testkit::metrics_text(mesh.gateway_addr)
        .await
        .unwrap();
    assert!(!text.contains("MadeUp"), "a made-up method became a label");
    assert!(
        !text.contains("made.up"),
        "a made-up service became a label"
    );
    assert!(text.contains(r#"method="unknown""#));
}

/// A page token as an attacker would forge one: valid base64 of valid JSON, without the tag.
fn forged(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_tokens_nul_subjects_and_extreme_values_are_client_errors() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let channel = mesh.gateway_channel().await.unwrap();
    let mut tasks = tasks_grpc(&mesh).await;
    let invalid = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(field_violations(&status)[0].0, "page_token", "{what}");
    };
    let nul_key = forged(
        r#"{"f":0,"k":["\u0000","2026-13-45 99:99"],"i":"00000000-0000-0000-0000-000000000000"}"#,
    );
    invalid(
        tasks
            .list_tasks(authed(
                "alice",
                ListTasksRequest {
                    page_token: nul_key,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ListTasks",
    );
    invalid(
        tasks
            .list_tags(authed(
                "alice",
                ListTagsRequest {
                    page_token: URL_SAFE_NO_PAD.encode("00000000-0000-0000-0000-000000000000 a\0b"),
                    page_size: 0,
                },
            ))
            .await
            .map(drop),
        "ListTags",
    );
    let mut reminders = ReminderServiceClient::new(channel.clone());
    invalid(
        reminders
            .list_reminders(authed("alice", ListRemindersRequest {
                page_token: forged(r#"{"f":9223372036854775807,"t":"00000000-0000-0000-0000-000000000000","r":"\u0000","q":""}"#),
                ..Default::default()
            }))
            .await
            .map(drop),
        "ListReminders",
    );
    let mut audit = AuditServiceClient::new(channel.clone());
    invalid(
        audit
            .list_activity(authed(
                "alice",
                ListActivityRequest {
                    page_token: forged(r#"{"of":"activity","position":-9223372036854775808}"#),
                    page_size: 0,
                },
            ))
            .await
            .map(drop),
        "ListActivity",
    );

    // A subject with NUL: the token is refused, not the database.
    let nul =
        taskmesh_platform::auth::Signer::hs256(&taskmesh_testkit::TEST_SECRET.to_owned().into())
            .mint("al\0ice", &[], Duration::from_secs(60))
            .unwrap();
    let status = tasks
        .list_tasks(with_token(&nul, ListTasksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // relative_to_due of exactly i64::MIN seconds.
    let status = tasks
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(Task {
                    title: "t".into(),
                    due: Some(due_in("UTC")),
                    reminders: vec![Reminder {
                        id: String::new(),
                        trigger: Some(reminder::Trigger::RelativeToDue(prost_types::Duration {
                            seconds: i64::MIN,
                            nanos: 0,
                        })),
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(field_violations(&status)[0].0.ends_with("relative_to_due"));

    // Malformed protobuf (a length running past the end) and a string that is not UTF-8,
    // sent over grpc-web by hand.
    for body in [&[0x0a, 0x7f, 0x41][..], &[0x0a, 0x02, 0xff, 0xfe][..]] {
        let (status, message, reason) =
            grpc_web_raw(&mesh, "/taskmesh.task.v1.TaskService/GetTask", body).await;
        assert_eq!(status, "3", "{message}");
        assert_eq!(reason.as_deref(), Some("MALFORMED_MESSAGE"), "{message}");
    }
}

/// POSTs one grpc-web frame of `body` to `path` over HTTP/1.1 with alice's token; the
/// response's `grpc-status`, `grpc-message` and the `ErrorInfo.reason` of its
/// `grpc-status-details-bin` (from the headers of a trailers-only answer or the trailer
/// frame).
async fn grpc_web_raw(mesh: &Mesh, path: &str, body: &[u8]) -> (String, String, Option<String>) {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(body);
    let mut socket = TcpStream::connect(mesh.gateway_addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        taskmesh_testkit::token("alice"),
        frame.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&frame).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let lower = text.to_ascii_lowercase();
    let field = |name: &str| {
        lower
            .find(&format!("{name}:"))
            .map(|at| &text[at + name.len() + 1..])
            .map(|rest| {
                rest.split(['\r', '\n'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let details = field("grpc-status-details-bin");
    let reason = (!details.is_empty()).then(|| {
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(details.trim_end_matches('='))
            .expect("grpc-status-details-bin is base64");
        let status = tonic::Status::with_details(Code::Unknown, "", bytes.into());
        taskmesh_platform::grpc::reason(&status).unwrap_or_default()
    });
    (field("grpc-status"), field("grpc-message"), reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.connection_limits.idle_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let mut silent = Vec::new();
    for i in 0..40 {
        let mut socket = TcpStream::connect(mesh.gateway_addr).await.unwrap();
        if i % 2 == 0 {
            // An HTTP/2 preface and SETTINGS, then nothing.
            socket
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            socket
                .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
        }
        silent.push(socket);
    }
    for mut socket in silent {
        let mut buf = [0; 1024];
        // Whatever the server wrote (its SETTINGS, a GOAWAY), then the end.
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }
    // And the gateway still serves.
    new_task(&mesh, "alice", "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_configured_origins() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.cors = "https://app.example".parse().unwrap();
    })
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        let addr = mesh.gateway_addr;
        async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "OPTIONS /taskmesh.task.v1.TaskService/ListTasks HTTP/1.1\r\nHost: gateway\r\n\
                 Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
                 Connection: close\r\n\r\n"
            );
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).await.unwrap();
            response.to_ascii_lowercase()
        }
    };
    let allowed = preflight("https://app.example").await;
    assert!(
        allowed.contains("access-control-allow-origin: https://app.example"),
        "{allowed}"
    );
    let foreign = preflight("https://evil.example").await;
    assert!(
        !foreign.contains("access-control-allow-origin"),
        "{foreign}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_quota_gets_retry_info_and_another_user_is_untouched() {
    use taskmesh_platform::{auth::Verifier, quota::RateLimit};
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.verifier = Verifier::hs256(&taskmesh_testkit::TEST_SECRET.to_owned().into())
            .with_rate_limit(Some(RateLimit::new(
                20.try_into().unwrap(),
                40.try_into().unwrap(),
            )));
    })
    .await
    .unwrap();
    let bobs = new_task(&mesh, "bob", "bob's").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Bob stays within his quota: one call at a time, 10 a second.
    let bob = async {
        let mut native = tasks_grpc(&mesh).await;
        let mut failures = Vec::new();
        while !*stopped.borrow() {
            if let Err(status) = native
                .get_task(authed(
                    "bob",
                    GetTaskRequest {
                        name: bobs.name.clone(),
                    },
                ))
                .await
            {
                failures.push(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        failures
    };
    let alice = async {
        let channel = mesh.gateway_channel().await.unwrap();
        let calls = (0..400).map(|_| {
            let mut client = taskmesh_proto::task::v1::task_service_client::TaskServiceClient::new(
                channel.clone(),
            );
            async move {
                client
                    .list_tasks(authed("alice", ListTasksRequest::default()))
                    .await
            }
        });
        let results = join_all(calls).await;
        stop.send(true).unwrap();
        results
    };
    let (results, failures) = tokio::join!(alice, bob);
    assert!(failures.is_empty(), "bob's calls failed: {failures:?}");
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !refused.is_empty(),
        "400 calls at once went through a quota of 40"
    );
    for status in refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let details = tonic_types::StatusExt::get_error_details(status);
        assert!(details.retry_info().and_then(|r| r.retry_delay).is_some());
        assert!(details.quota_failure().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_rules_queue_on_their_pool_and_another_users_calls_go_on() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let bobs = new_task(&mesh, "bob", "bob's").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let bob = keep_reading(&mesh, "bob", bobs.name.clone(), "costly rules", stopped);
    let alice = async {
        let channel = mesh.gateway_channel().await.unwrap();
        // Rules that match nothing for a very long time: each walks its whole budget.
        let rules = (0..60).map(|i| {
            let mut client = RecurrenceServiceClient::new(channel.clone());
            async move {
                client
                    .validate_rule(authed(
                        "alice",
                        ValidateRuleRequest {
                            rrule: format!(
                                "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30;BYMINUTE={}",
                                i % 60
                            ),
                            dtstart: None,
                            time_zone: "Europe/Berlin".into(),
                        },
                    ))
                    .await
            }
        });
        // And the same rules set on a task of hers (UpdateTask checks them).
        let due = due_in("Europe/Berlin");
        let mut tasks = tasks_grpc(&mesh).await;
        let target = tasks
            .create_task(authed(
                "alice",
                CreateTaskRequest {
                    task: Some(Task {
                        title: "target".into(),
                        due: Some(due),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let updates = (0..30).map(|i| {
            let mut client = tasks.clone();
            let name = target.name.clone();
            async move {
                client
                    .update_task(authed(
                        "alice",
                        UpdateTaskRequest {
                            task: Some(Task {
                                name,
                                recurrence: Some(taskmesh_proto::task::v1::Recurrence {
                                    rrule: format!(
                                        "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30;BYMINUTE={i}"
                                    ),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            update_mask: Some(FieldMask {
                                paths: vec!["recurrence".into()],
                            }),
                        },
                    ))
                    .await
            }
        });
        // Meanwhile bob checks rules of his own: his share of the pool is his.
        let bob_rules = async {
            let mut client = RecurrenceServiceClient::new(channel.clone());
            let mut failures = Vec::new();
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut request = authed(
                    "bob",
                    ValidateRuleRequest {
                        rrule: "FREQ=WEEKLY;BYDAY=MO,WE".into(),
                        dtstart: None,
                        time_zone: "Europe/Berlin".into(),
                    },
                );
                request.set_timeout(Duration::from_secs(10));
                match client.validate_rule(request).await {
                    Ok(response) => assert!(response.into_inner().valid),
                    Err(status) => failures.push(status),
                }
            }
            failures
        };
        let (results, updated, bob_rules) =
            tokio::join!(join_all(rules), join_all(updates), bob_rules);
        stop.send(true).unwrap();
        (results, updated, bob_rules)
    };
    let ((results, updated, bob_rules), failures) = tokio::join!(alice, bob);
    assert!(failures.is_empty(), "bob's calls failed: {failures:?}");
    assert!(
        bob_rules.is_empty(),
        "bob's rule checks failed: {bob_rules:?}"
    );
    // Alice's rules were answered, or refused past her share of the pool (she asked for
    // more than it gives one user at once); never anything else.
    let shed = |status: &tonic::Status| {
        status.code() == Code::ResourceExhausted
            && tonic_types::StatusExt::get_error_details(status)
                .quota_failure()
                .is_some_and(|q| q.violations[0].subject == "rule checks per user")
    };
    let mut answered = 0;
    for result in results {
        match result {
            Ok(response) => {
                assert!(!response.into_inner().valid);
                answered += 1;
            }
            Err(status) => assert!(shed(&status), "{status:?}"),
        }
    }
    for result in updated {
        let status = result.unwrap_err();
        if !shed(&status) {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(field_violations(&status)[0].0, "task.recurrence.rrule");
            answered += 1;
        }
    }
    assert!(answered > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_oldest_stream_makes_room_for_a_new_one() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.max_streams_per_user = 2;
    })
    .await
    .unwrap();
    let mut first = crate::live::open(&mesh, "alice", "").await;
    let _ = crate::live::until_caught_up(&mut first).await;
    let mut second = crate::live::open(&mesh, "alice", "").await;
    let _ = crate::live::until_caught_up(&mut second).await;
    let mut bobs = crate::live::open(&mesh, "bob", "").await;
    let _ = crate::live::until_caught_up(&mut bobs).await;
    let mut third = crate::live::open(&mesh, "alice", "").await;
    let _ = crate::live::until_caught_up(&mut third).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.message().await {
                Err(status) => return status,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the oldest stream ended without a status"),
            }
        }
    })
    .await
    .expect("the oldest stream ended");
    assert_eq!(ended.code(), Code::ResourceExhausted);
    // The others stay open: a change reaches them.
    new_task(&mesh, "alice", "seen by the newer two").await;
    for stream in [&mut second, &mut third] {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a change arrives")
            .expect("the stream is open");
        assert!(message.is_some());
    }
}
