//! Search: ListTasks with a full-text `query` and a `filter` over a large table (by default
//! 1,000,000 tasks of 1,000 users, written straight into TaskService's schema), open-loop at
//! a fixed rate, p50/p95/p99, beside the bare tonic server at the same rate.
//!
//! Titles and descriptions draw four words, and priority, state and due are chosen, by
//! hashes of the task's number (independent of its user: every user gets the same mix) from a 64-word vocabulary, so a one-word query matches about one task in sixteen
//! of every user's: the full-text index finds matches across all users and
//! the user and filter narrow them, which is the shape that decides the latency.

use std::time::Duration;

use taskmesh_proto::task::v1::{ListTasksRequest, task_service_client::TaskServiceClient};
use taskmesh_testkit::MeshOptions;

use crate::{Scale, load::open_loop, rpc, table::Table};

const WORDS: [&str; 64] = [
    "buy",
    "call",
    "email",
    "write",
    "review",
    "plan",
    "book",
    "pay",
    "fix",
    "clean",
    "order",
    "send",
    "read",
    "check",
    "update",
    "prepare",
    "milk",
    "bread",
    "report",
    "invoice",
    "dentist",
    "car",
    "garden",
    "kitchen",
    "budget",
    "slides",
    "meeting",
    "flight",
    "hotel",
    "gift",
    "rent",
    "taxes",
    "insurance",
    "passport",
    "bike",
    "laundry",
    "groceries",
    "doctor",
    "school",
    "lunch",
    "dinner",
    "coffee",
    "printer",
    "laptop",
    "phone",
    "charger",
    "paint",
    "fence",
    "roof",
    "window",
    "contract",
    "offer",
    "team",
    "project",
    "release",
    "backup",
    "server",
    "design",
    "draft",
    "letter",
    "parcel",
    "ticket",
    "concert",
    "birthday",
];

/// Runs the scenario; adds its rows to `table`.
pub(crate) async fn run(scale: &Scale, table: &mut Table) -> anyhow::Result<()> {
    let mesh = crate::mesh::start(MeshOptions::default()).await?;
    let (tasks, users) = (scale.search_tasks, scale.search_users);
    let started = std::time::Instant::now();
    // A million rows take longer than the pool's statement timeout (meant for requests).
    let mut seed = mesh.pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *seed)
        .await?;
    sqlx::query(
        "INSERT INTO tasks (id, user_id, title, description, priority, due_at, due_time, \
         due_time_zone, state, create_time, update_time) \
         SELECT gen_random_uuid(), 'search-' || (i % $2), \
                $3[1 + (hashtext(i || 'a') & 63)] || ' ' || $3[1 + (hashtext(i || 'b') & 63)] \
                || ' no. ' || i, \
                'remember to ' || $3[1 + (hashtext(i || 'c') & 63)] || ' the ' \
                || $3[1 + (hashtext(i || 'd') & 63)], \
                1 + (hashtext(i || 'p') & 2147483647) % 5, \
                now() + (hashtext(i || 'u') & 63) * interval '1 day', \
                now() + (hashtext(i || 'u') & 63) * interval '1 day', \
                'UTC', 1 + ((hashtext(i || 's') & 3) = 0)::int, now(), now() \
         FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(tasks)?)
    .bind(i64::try_from(users)?)
    .bind(WORDS.to_vec())
    .execute(&mut *seed)
    .await?;
    seed.commit().await?;
    sqlx::query("ANALYZE tasks").execute(&mesh.pool).await?;
    table.note(format!(
        "search: {tasks} tasks of {users} users written and analysed in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let channel = mesh.gateway_channel().await?;
    let tokens = rpc::bearer_tokens("search-", users)?;
    let search = |i: u64| {
        let mut client = TaskServiceClient::new(channel.clone());
        let request = rpc::authorized(
            ListTasksRequest {
                page_size: 50,
                query: WORDS[(i as usize * 11) % WORDS.len()].to_owned(),
                filter: "state = OPEN AND priority >= MEDIUM".to_owned(),
                ..Default::default()
            },
            &tokens[(i as usize * 7919) % users],
        );
        async move { client.list_tasks(request).await.is_ok() }
    };
    let (echo_addr, echo_stop) = rpc::echo_server().await?;
    let echo = rpc::connect(echo_addr).await?;
    let check = |i: u64| rpc::check(echo[i as usize % echo.len()].clone());

    let rate = scale.search_rate;
    open_loop(rate, Duration::from_secs(1), &search).await;
    let ours = open_loop(rate, scale.fixed, &search).await;
    let limit = open_loop(rate, scale.fixed, &check).await;
    for (label, quantile) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        table.ratio_row(
            "search",
            &format!("ListTasks query+filter {label} @ {rate} rps, ms"),
            ours.ms(quantile),
            "tonic echo",
            limit.ms(quantile),
            ours.cpu,
        );
    }
    table.note_errors("search", &ours);
    echo_stop.cancel();
    Ok(())
}
