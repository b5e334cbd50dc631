//! `--apns-test`, `--fcm-test`, `--webpush-test`: one test message to one
//! device with the service's flags, the service's answer printed, exit 0 only
//! if it was accepted. No hub runs: no registry, no clients.

use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use log::{error, info};

use crate::config::{Config, PushTest};
use crate::push::registry::{DeviceToken, FcmToken, Subscription, SubscriptionKeys};
use crate::push::sender::{Outcome, Sender, Service};
use crate::push::{apns, fcm, webpush};

/// What a test message says.
const TITLE: &str = "pushhub";
const BODY: &str = "pushhub test message";

/// How long the service has to answer.
const WAIT: Duration = Duration::from_secs(60);

pub fn run(config: &Config, test: &PushTest) -> ExitCode {
    let prepared = match test {
        PushTest::Apns(token) => apns_test(config, token),
        PushTest::Fcm(token) => fcm_test(config, token),
        PushTest::WebPush(file) => webpush_test(config, file),
    };
    match prepared {
        Ok(code) => code,
        Err((code, why)) => {
            error!("{why}");
            ExitCode::from(code)
        }
    }
}

type Prepared = Result<ExitCode, (u8, String)>;

fn apns_test(config: &Config, token: &str) -> Prepared {
    let settings = config.apns.as_ref().ok_or((
        2,
        "--apns-test needs the APNs flags: --apns-topic and credentials".into(),
    ))?;
    let token = DeviceToken::parse(token).map_err(|e| (2, format!("--apns-test: {e}")))?;
    let sender = apns::settings::build_sender(settings, |_| {}).map_err(|e| (1, e))?;
    let payload =
        format!(r#"{{"aps":{{"alert":{{"title":"{TITLE}","body":"{BODY}"}},"sound":"default"}}}}"#);
    let notification = apns::sender::Notification::new(token, payload);
    let at = format!("{}:{}", settings.endpoint.host, settings.endpoint.port);
    Ok(send_one(sender, notification, &at))
}

fn fcm_test(config: &Config, token: &str) -> Prepared {
    let settings = config
        .fcm
        .as_ref()
        .ok_or((2, "--fcm-test needs --fcm-credentials-file".into()))?;
    let token = FcmToken::parse(token).map_err(|e| (2, format!("--fcm-test: {e}")))?;
    let sender = fcm::settings::build_sender(settings, |_| {}).map_err(|e| (1, e))?;
    let message = format!(r#"{{"notification":{{"title":"{TITLE}","body":"{BODY}"}}}}"#);
    let message = fcm::sender::Message::new(token, Rc::from(message));
    Ok(send_one(sender, message, &settings.endpoint.to_string()))
}

fn webpush_test(config: &Config, file: &std::path::Path) -> Prepared {
    let settings = config.vapid.as_ref().ok_or((
        2,
        "--webpush-test needs --vapid-key-file and --vapid-subject".into(),
    ))?;
    let bad = |why: String| (2, format!("--webpush-test {}: {why}", file.display()));
    let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Given {
        endpoint: String,
        keys: SubscriptionKeys,
    }
    let given: Given = serde_json::from_slice(&text).map_err(|_| {
        bad("not a subscription: PushSubscription.toJSON()'s {\"endpoint\":..., \"keys\":{\"p256dh\":..., \"auth\":...}}".into())
    })?;
    let subscription =
        Subscription::new(&given.endpoint, given.keys).map_err(|e| bad(e.to_string()))?;
    let sender = webpush::settings::build_sender(settings, |_| {}).map_err(|e| (1, e))?;
    let options = webpush::sender::Options {
        payload: Bytes::from(format!(r#"{{"title":"{TITLE}","body":"{BODY}"}}"#)),
        ttl: 60,
        urgency: None,
        topic: None,
    };
    let at = given.endpoint.clone();
    let message = webpush::sender::Message::new(subscription, Rc::new(options)).map_err(bad)?;
    Ok(send_one(sender, message, &at))
}

/// Sends `message` and prints what became of it.
fn send_one<S: Service>(sender: Sender<S>, message: S::Message, at: &str) -> ExitCode {
    let sender = Rc::new(sender);
    let pending = match sender.send(message) {
        Ok(pending) => pending,
        Err(full) => {
            error!("{full}");
            return ExitCode::from(1);
        }
    };
    info!("sending a test message to {} through {at}", S::NAME);
    let outcome = smol::block_on(smol::future::or(
        async {
            Rc::clone(&sender).run().await;
            None
        },
        crate::time::timeout(WAIT, pending.outcome()),
    ));
    match outcome {
        Some(Outcome::Accepted { id }) => {
            println!("accepted (id {})", id.as_deref().unwrap_or("?"));
            ExitCode::SUCCESS
        }
        Some(Outcome::Gone { status, reason } | Outcome::Rejected { status, reason }) => {
            println!("refused: {status} {reason}");
            ExitCode::from(1)
        }
        Some(Outcome::Failed { why }) => {
            println!("failed: {why}");
            ExitCode::from(1)
        }
        None => {
            println!("no answer from {} within {} s", S::NAME, WAIT.as_secs());
            ExitCode::from(1)
        }
    }
}
