//! `pushsvc`: what the push services (APNs, FCM, Web Push) cost a hub, against
//! `pushhub-bench sink` standing in for them. Three measurements:
//!
//! - `idle`: the hub's RSS after `--settle-ms`, with whatever providers it was
//!   started with (`--provider` is a label here), and the connections its
//!   senders made (`stats`).
//! - `queued`: `--devices` devices of one provider registered to uid `q`
//!   (pipelined `register`s), then one push to `q` with that provider's part
//!   while no client is connected, on a text-port connection of its own (the
//!   reply waits for the services' answers, which a `--hold` sink never
//!   gives). The hub's RSS `--settle-ms` after the push, less its RSS before,
//!   divided by the devices: bytes per queued notification (16 of them are in
//!   flight on the connection, the rest wait in the sender's queue).
//! - `cpu`: the same registrations, against an answering sink; one warm-up
//!   push (connections, access token), then pushes to `q`, `--window` at a
//!   time, for `--duration-secs`. The hub's CPU time over that part divided
//!   by the messages the sink counted (`--sink-stats`, its `--stats-file`).
//!
//! Device tokens and endpoints have the sizes of real ones: APNs 64 hex
//! digits, FCM tokens 152 bytes, Web Push endpoints of 180 bytes with a P-256
//! key and an auth secret of their own (made here with openssl).

use std::net::SocketAddrV4;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use serde_json::{Value, json};
use smol::Timer;

use crate::args::{Measure, Provider, PushSvcArgs};
use crate::common::Env;
use crate::net;
use crate::report::{rounded, say};
use crate::textport::{self, Backend};

/// The uid every device is registered to.
const UID: &str = "q";

/// Length of an FCM registration token (Google's are about this long).
const FCM_TOKEN_LEN: usize = 152;

/// Length of a Web Push endpoint URL (FCM's for Chrome are about this long).
const ENDPOINT_LEN: usize = 180;

/// How long registrations are given to settle before the RSS is read.
const SETTLE_REGISTERED: Duration = Duration::from_secs(1);

/// How long the sink is given to write its counts after the last reply.
const SINK_STATS_WAIT: Duration = Duration::from_millis(400);

pub async fn run(env: Rc<Env>, a: &PushSvcArgs) -> Result<(), String> {
    let hub = env.hub()?;
    let report = &env.report;
    report.set("measure", measure_name(a.measure));
    report.set("provider", a.provider.name());
    let sink = net::loopback_v4(a.sink)?;
    let mut backend = env.backend().await?;
    match a.measure {
        Measure::Idle => {
            Timer::after(Duration::from_millis(a.settle_ms)).await;
            report.set("settle_ms", a.settle_ms);
            report.set("rss_bytes", hub.rss_bytes()?);
            let stats = backend.request(r#"{"cmd":"stats"}"#).await?;
            for name in ["apns", "fcm", "webpush"] {
                if let Some(c) = stats[name]["connections"].as_u64() {
                    report.set_in("senders", name, "connections", c);
                }
            }
            Ok(())
        }
        Measure::Queued => {
            let provider = single(a.provider)?;
            register(&env, &mut backend, provider, a.devices, sink).await?;
            queued(&env, &mut backend, provider, a).await
        }
        Measure::Cpu => {
            let provider = single(a.provider)?;
            let stats_file = a
                .sink_stats
                .as_deref()
                .ok_or("--measure cpu needs --sink-stats (the sink's --stats-file)")?;
            register(&env, &mut backend, provider, a.devices, sink).await?;
            cpu(&env, backend, provider, a, stats_file).await
        }
    }
}

fn measure_name(m: Measure) -> &'static str {
    match m {
        Measure::Idle => "idle",
        Measure::Queued => "queued",
        Measure::Cpu => "cpu",
    }
}

fn single(p: Provider) -> Result<Provider, String> {
    match p {
        Provider::Apns | Provider::Fcm | Provider::WebPush => Ok(p),
        _ => Err("--measure queued and cpu take one provider: apns, fcm or webpush".into()),
    }
}

/// The register line of device `i` of `provider`.
fn register_line(provider: Provider, i: u32, sink: SocketAddrV4) -> Result<Value, String> {
    let device = match provider {
        Provider::Apns => json!(format!("{i:064x}")),
        Provider::Fcm => {
            let mut token = format!("b{i:010}:APA91b");
            token.extend(std::iter::repeat_n('x', FCM_TOKEN_LEN - token.len()));
            json!(token)
        }
        Provider::WebPush => {
            let mut endpoint = format!("https://localhost:{}/push/{i:08}-", sink.port());
            endpoint.extend(std::iter::repeat_n('x', ENDPOINT_LEN - endpoint.len()));
            let (p256dh, auth) = subscription_keys().map_err(|e| format!("openssl: {e}"))?;
            json!({"endpoint": endpoint, "expirationTime": null,
                   "keys": {"p256dh": p256dh, "auth": auth}})
        }
        Provider::None | Provider::All => unreachable!("checked by `single`"),
    };
    Ok(json!({"cmd": "register", "uid": UID, provider.name(): device}))
}

/// A browser's keys for a subscription: a new P-256 public key
/// (uncompressed) and a 16-byte auth secret, base64url.
fn subscription_keys() -> Result<(String, String), openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = EcKey::generate(&group)?;
    let mut ctx = BigNumContext::new()?;
    let point = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    let mut auth = [0u8; 16];
    openssl::rand::rand_bytes(&mut auth)?;
    Ok((
        BASE64URL_NOPAD.encode(&point),
        BASE64URL_NOPAD.encode(&auth),
    ))
}

/// The push to `q` with `provider`'s part, its line ending with `\n`.
fn push_line(provider: Provider) -> Vec<u8> {
    let part = match provider {
        Provider::Apns => json!({"aps": {"alert": "x"}}),
        Provider::Fcm => json!({"notification": {"title": "x"}}),
        Provider::WebPush => json!({"data": "x"}),
        Provider::None | Provider::All => unreachable!("checked by `single`"),
    };
    let mut line = json!({"cmd": "push", "uid": UID, "data": "x", provider.name(): part})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// Registers `n` devices of `provider` to `q`, pipelined.
async fn register(
    env: &Env,
    backend: &mut Backend,
    provider: Provider,
    n: u32,
    sink: SocketAddrV4,
) -> Result<(), String> {
    if n == 0 {
        return Err("--devices must be at least 1".into());
    }
    env.report.set("devices", n);
    let mut lines = Vec::new();
    for i in 0..n {
        lines.extend_from_slice(register_line(provider, i, sink)?.to_string().as_bytes());
        lines.push(b'\n');
    }
    say(&format!(
        "registering {n} {} devices to uid {UID}",
        provider.name()
    ));
    let started = Instant::now();
    let registered = env
        .bounded(backend.pipeline(&lines, n as usize, |reply| {
            let v: Value = serde_json::from_slice(reply)
                .map_err(|e| format!("register reply is not JSON ({e})"))?;
            match v["ok"] == true {
                true => Ok(()),
                false => Err(format!("the hub refused a register: {v}")),
            }
        }))
        .await;
    registered.unwrap_or_else(|| Err(env.timed_out()))?;
    env.report.num(
        "register_per_s",
        f64::from(n) / started.elapsed().as_secs_f64(),
        0,
    );
    Ok(())
}

/// The provider's object of the hub's `stats`.
async fn sender_stats(backend: &mut Backend, provider: Provider) -> Result<Value, String> {
    let stats = backend.request(r#"{"cmd":"stats"}"#).await?;
    match &stats[provider.name()] {
        Value::Object(_) => Ok(stats[provider.name()].clone()),
        _ => Err(format!(
            "the hub's stats have no {} object: is it configured for it?",
            provider.name()
        )),
    }
}

async fn queued(
    env: &Env,
    backend: &mut Backend,
    provider: Provider,
    a: &PushSvcArgs,
) -> Result<(), String> {
    let hub = env.hub()?;
    let report = &env.report;
    Timer::after(SETTLE_REGISTERED).await;
    let before = sender_stats(backend, provider).await?;
    let rss_before = hub.rss_bytes()?;
    report.set("rss_before", rss_before);
    // A connection of its own: its reply waits for answers that never come.
    let (requests, replies) = textport::connect(env.text)
        .await
        .map_err(|e| format!("cannot connect to the text port {}: {e}", env.text))?;
    requests.send(&push_line(provider)).await?;
    say(&format!(
        "one push to {} devices sent; waiting {} ms",
        a.devices, a.settle_ms
    ));
    Timer::after(Duration::from_millis(a.settle_ms)).await;
    let rss_after = hub.rss_bytes()?;
    let after = sender_stats(backend, provider).await?;
    report.set("settle_ms", a.settle_ms);
    report.set("rss_after", rss_after);
    let delta = rss_after as f64 - rss_before as f64;
    report.num("rss_delta", delta, 0);
    // What the hub holds: messages queued and those sent but unanswered. A
    // lane's backlog is bounded (Web Push: a quarter of the queue), so with
    // more devices some are refused and freed, and do not count.
    let queued = after["queued"].as_u64().unwrap_or(0);
    let sent = |v: &Value| v["sent"].as_u64().unwrap_or(0);
    let in_flight = sent(&after).saturating_sub(sent(&before));
    let held = queued + in_flight;
    if held == 0 {
        return Err("the hub holds no message after the push".into());
    }
    report.set("hub_queued", queued);
    report.set("hub_sent", in_flight);
    report.num("bytes_per_queued", delta / held as f64, 0);
    let accepted = |v: &Value| v["accepted"].as_u64().unwrap_or(0);
    let answered = accepted(&after).saturating_sub(accepted(&before));
    if answered > 0 {
        return Err(format!(
            "{answered} messages were accepted: is the sink started with --hold?"
        ));
    }
    drop((requests, replies));
    Ok(())
}

/// The sink's count of `provider`'s messages and of token requests.
fn sink_counts(path: &Path, provider: Provider) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the sink's stats {}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the sink's stats {} are not JSON: {e}", path.display()))?;
    let get = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("no {k} in the sink's stats {}", path.display()))
    };
    Ok((get(provider.name())?, get("token")?))
}

/// What one push's reply says of the provider: (devices, accepted).
fn reply_counts(reply: &[u8], provider: Provider) -> Result<(u64, u64), String> {
    let v: Value =
        serde_json::from_slice(reply).map_err(|e| format!("push reply is not JSON ({e})"))?;
    let part = &v[provider.name()];
    match (
        v["ok"] == true,
        part["devices"].as_u64(),
        part["accepted"].as_u64(),
    ) {
        (true, Some(devices), Some(accepted)) => Ok((devices, accepted)),
        _ => {
            let mut text = v.to_string();
            text.truncate(400);
            Err(format!("unexpected push reply: {text}"))
        }
    }
}

async fn cpu(
    env: &Env,
    backend: Backend,
    provider: Provider,
    a: &PushSvcArgs,
    stats_file: &Path,
) -> Result<(), String> {
    let hub = env.hub()?;
    let report = &env.report;
    if a.window == 0 || a.duration_secs == 0 {
        return Err("--window and --duration-secs must be at least 1".into());
    }
    let (requests, mut replies) = backend.split();
    let line = push_line(provider);
    // Warm-up: the connection made, the access token fetched.
    requests.send(&line).await?;
    let warm = env.bounded(replies.next()).await;
    let (devices, accepted) =
        reply_counts(warm.unwrap_or_else(|| Err(env.timed_out()))?, provider)?;
    if devices != u64::from(a.devices) || accepted != devices {
        return Err(format!(
            "the warm-up push went to {devices} devices, {accepted} accepted; expected {}",
            a.devices
        ));
    }
    Timer::after(SINK_STATS_WAIT).await;
    let (sink_before, tokens_before) = sink_counts(stats_file, provider)?;
    say(&format!(
        "pushing to {} devices for {} s, {} pushes in flight",
        a.devices, a.duration_secs, a.window
    ));
    let steal = crate::proc::steal_ns();
    let cpu_before = hub.cpu_ns()?;
    let started = Instant::now();
    let stop = started + Duration::from_secs(u64::from(a.duration_secs));
    let run = async {
        let (mut sent, mut answered, mut accepted) = (0u64, 0u64, 0u64);
        for _ in 0..a.window {
            requests.send(&line).await?;
            sent += 1;
        }
        while answered < sent {
            let (_, ok) = reply_counts(replies.next().await?, provider)?;
            answered += 1;
            accepted += ok;
            if Instant::now() < stop {
                requests.send(&line).await?;
                sent += 1;
            }
        }
        Ok::<_, String>((answered, accepted))
    };
    let (pushes, accepted) = env
        .bounded(run)
        .await
        .unwrap_or_else(|| Err(env.timed_out()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ns = hub.cpu_ns()?.saturating_sub(cpu_before);
    env.report_steal("steal_ms", steal);
    Timer::after(SINK_STATS_WAIT).await;
    let (sink_after, tokens_after) = sink_counts(stats_file, provider)?;
    let messages = sink_after.saturating_sub(sink_before);
    report.set("window", a.window);
    report.set("pushes", pushes);
    report.set("accepted", accepted);
    report.set("sink_messages", messages);
    report.set(
        "sink_token_requests",
        tokens_after.saturating_sub(tokens_before),
    );
    report.num("elapsed_s", elapsed, 3);
    report.num("messages_per_s", messages as f64 / elapsed, 0);
    report.num("hub_cpu_ms", cpu_ns as f64 / 1e6, 1);
    if messages == 0 {
        return Err("the sink counted no message".into());
    }
    report.set(
        "hub_cpu_us_per_message",
        rounded(cpu_ns as f64 / 1e3 / messages as f64, 2),
    );
    report.num("hub_cpu_share", cpu_ns as f64 / 1e9 / elapsed, 3);
    if messages != accepted {
        return Err(format!(
            "the sink counted {messages} messages, the hub's replies {accepted} accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lines_the_hub_takes() {
        let sink = SocketAddrV4::new([127, 0, 0, 1].into(), 21443);
        let apns = register_line(Provider::Apns, 7, sink).unwrap();
        assert_eq!(apns["apns"].as_str().unwrap().len(), 64);
        let fcm = register_line(Provider::Fcm, 7, sink).unwrap();
        let token = fcm["fcm"].as_str().unwrap();
        assert_eq!(token.len(), FCM_TOKEN_LEN);
        assert!(pushhub::push::registry::FcmToken::parse(token).is_ok());
        let web = register_line(Provider::WebPush, 7, sink).unwrap();
        let endpoint = web["webpush"]["endpoint"].as_str().unwrap();
        assert_eq!(endpoint.len(), ENDPOINT_LEN);
        assert!(endpoint.starts_with("https://localhost:21443/push/00000007-"));
        let keys: pushhub::push::registry::SubscriptionKeys =
            serde_json::from_value(web["webpush"]["keys"].clone()).unwrap();
        assert!(pushhub::push::registry::Subscription::new(endpoint, keys).is_ok());
        let push: Value = serde_json::from_slice(&push_line(Provider::WebPush)).unwrap();
        assert_eq!(push["webpush"]["data"], "x");
    }

    #[test]
    fn reads_push_replies() {
        let reply = br#"{"ok":true,"delivered":0,"fcm":{"devices":3,"accepted":2,"refused":[]}}"#;
        assert_eq!(reply_counts(reply, Provider::Fcm), Ok((3, 2)));
        assert!(reply_counts(reply, Provider::Apns).is_err());
        assert!(reply_counts(br#"{"ok":false,"error":"x"}"#, Provider::Fcm).is_err());
    }
}
