<?php
// pushhub Web Push example: the backend that index.html talks to.
//
//   php -S localhost:8000 -t examples/webpush
//
// PHP 8.1 or newer, no extension beyond the standard ones. It talks to the
// hub's text port (HUB_TEXT, default 127.0.0.1:5678) the way the original
// push.php does: one JSON line out, one line back. Every answer is JSON:
//
//   {"ok":true|false, "sent":<the line sent to the hub>, "hub":<its reply>}
//
// or, when this script refuses the request itself or cannot reach the hub,
// {"ok":false,"error":"..."} with a 4xx or 5xx status.
//
// Actions (?action=...):
//   GET  vapid-key       the hub's VAPID public key, for pushManager.subscribe
//   POST subscribe       {"uid":..,"subscription":PushSubscription.toJSON()}
//   POST unsubscribe     {"uid":..,"subscription":...}
//   POST push            {"uid":..,"title":..,"body":..,"url":..,"when":..}
//   POST push-original   {"uid":..,"title":..,"body":..}: the original's
//                        {"uid":...} line, for comparison (WebSocket only)

declare(strict_types=1);

const MAX_BODY = 16384;        // a subscription is well under 1 KiB
const CONNECT_TIMEOUT = 2.0;   // seconds to reach the hub
const REPLY_TIMEOUT = 35;      // seconds for its reply: a push waits for the
                               // push services' answers (and ack_timeout)

function respond(int $status, array $body): never
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('Cache-Control: no-store');
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
    exit;
}

function fail(int $status, string $error): never
{
    respond($status, ['ok' => false, 'error' => $error]);
}

// One request to the text port: one line out, one line back. Returns the
// line sent and the reply, decoded when it is JSON (the original form's
// reply is the bare word ok or fail).
function hub(array $request): array
{
    $address = getenv('HUB_TEXT') ?: '127.0.0.1:5678';
    $line = json_encode($request, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    $socket = @stream_socket_client("tcp://$address", $errno, $errstr, CONNECT_TIMEOUT);
    if ($socket === false) {
        fail(502, "cannot reach the hub's text port at $address: $errstr (is pushhub running? HUB_TEXT sets the address)");
    }
    stream_set_timeout($socket, REPLY_TIMEOUT);
    if (fwrite($socket, $line . "\n") === false) {
        fail(502, "the hub at $address closed the connection before the request was sent");
    }
    $reply = fgets($socket);
    $meta = stream_get_meta_data($socket);
    fclose($socket);
    if ($reply === false) {
        fail(502, $meta['timed_out']
            ? "no reply from the hub within " . REPLY_TIMEOUT . " s"
            : "the hub closed the connection without a reply");
    }
    $reply = rtrim($reply, "\r\n");
    $decoded = json_decode($reply, true);
    return [$line, is_array($decoded) ? $decoded : $reply];
}

// The request's JSON body, as an array. Refuses anything else.
function json_body(): array
{
    // Only JSON: a cross-site page cannot send this content type without
    // the browser asking first (a CORS preflight, which this script never
    // allows), so another site cannot make a visitor's browser subscribe
    // or push through here. Sec-Fetch-Site says the same in new browsers.
    $type = strtolower(trim(explode(';', $_SERVER['CONTENT_TYPE'] ?? '')[0]));
    if ($type !== 'application/json') {
        fail(415, 'send the request as application/json');
    }
    if (($_SERVER['HTTP_SEC_FETCH_SITE'] ?? 'same-origin') === 'cross-site') {
        fail(403, 'cross-site requests are refused');
    }
    $raw = file_get_contents('php://input', false, null, 0, MAX_BODY + 1);
    if ($raw === false || strlen($raw) > MAX_BODY) {
        fail(413, 'the request body is over ' . MAX_BODY . ' bytes');
    }
    try {
        $body = json_decode($raw, true, 8, JSON_THROW_ON_ERROR);
    } catch (JsonException $e) {
        fail(400, 'the body is not JSON: ' . $e->getMessage());
    }
    if (!is_array($body) || (array_is_list($body) && $body !== [])) {
        fail(400, 'the body must be a JSON object');
    }
    return $body;
}

// Whose subscription this is, or who the push is for.
//
// This example takes the uid from the request, because it has no login. A
// real app NEVER does: anyone could then register their browser for
// another user's pushes, or push to anyone. It takes the uid from its own
// session, the user it authenticated:
//
//     session_start();
//     $uid = $_SESSION['uid'] ?? fail(401, 'log in first');
//
// Even here the uid is checked, so that nothing odd reaches the hub.
function current_uid(array $body): string
{
    $uid = $body['uid'] ?? null;
    if (!is_string($uid) || !preg_match('/^[A-Za-z0-9_.@-]{1,64}$/', $uid)) {
        fail(400, '`uid` must be 1 to 64 letters, digits and _.@-');
    }
    return $uid;
}

// The subscription, as PushSubscription.toJSON() gives it, rebuilt from the
// members the hub reads (so that nothing else is passed on).
function subscription(array $body): array
{
    $sub = $body['subscription'] ?? null;
    $endpoint = is_array($sub) ? ($sub['endpoint'] ?? null) : null;
    $keys = is_array($sub) ? ($sub['keys'] ?? null) : null;
    if (!is_string($endpoint) || !str_starts_with($endpoint, 'https://') || strlen($endpoint) > 2048) {
        fail(400, '`subscription.endpoint` must be an https:// URL of at most 2048 characters');
    }
    foreach (['p256dh', 'auth'] as $name) {
        $key = is_array($keys) ? ($keys[$name] ?? null) : null;
        if (!is_string($key) || !preg_match('/^[A-Za-z0-9_-]{1,200}={0,2}$/', $key)) {
            fail(400, "`subscription.keys.$name` must be a base64url string");
        }
    }
    $expiration = $sub['expirationTime'] ?? null;
    return [
        'endpoint' => $endpoint,
        'expirationTime' => is_int($expiration) || is_float($expiration) ? $expiration : null,
        'keys' => ['p256dh' => $keys['p256dh'], 'auth' => $keys['auth']],
    ];
}

// A short string field, or its default. (Bytes, not characters: mbstring
// is not a standard extension. json_decode has checked the UTF-8.)
function text(array $body, string $name, string $default, int $max): string
{
    $value = $body[$name] ?? $default;
    if (!is_string($value) || strlen($value) > $max) {
        fail(400, "`$name` must be a string of at most $max bytes");
    }
    return $value;
}

function forward(array $request): never
{
    [$line, $reply] = hub($request);
    respond(200, [
        'ok' => is_array($reply) ? ($reply['ok'] ?? false) === true : $reply === 'ok',
        'sent' => $line,
        'hub' => $reply,
    ]);
}

$action = $_GET['action'] ?? '';
$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
$wanted = $action === 'vapid-key' ? 'GET' : 'POST';
if (!in_array($action, ['vapid-key', 'subscribe', 'unsubscribe', 'push', 'push-original'], true)) {
    fail(404, 'unknown action: use ?action=vapid-key, subscribe, unsubscribe, push or push-original');
}
if ($method !== $wanted) {
    header("Allow: $wanted");
    fail(405, "use $wanted for action=$action");
}

switch ($action) {
    case 'vapid-key':
        // The key the page subscribes with. The hub reads it from
        // --vapid-key-file; asking it means nothing is copied by hand, and a
        // new key needs only a hub restart (and new subscriptions).
        forward(['cmd' => 'vapid_key']);

    case 'subscribe':
        $body = json_body();
        forward(['cmd' => 'register', 'uid' => current_uid($body), 'webpush' => subscription($body)]);

    case 'unsubscribe':
        // The hub finds the subscription by its endpoint.
        $body = json_body();
        forward(['cmd' => 'unregister', 'uid' => current_uid($body), 'webpush' => subscription($body)]);

    case 'push':
        $body = json_body();
        $uid = current_uid($body);
        $message = [
            'title' => text($body, 'title', 'pushhub', 100),
            'body' => text($body, 'body', 'a test push', 500),
            // A path on this site: the service worker opens it on a click.
            'url' => text($body, 'url', '/', 500),
        ];
        if (!str_starts_with($message['url'], '/') || str_starts_with($message['url'], '//')) {
            fail(400, '`url` must be a path on this site, starting with one /');
        }
        $when = text($body, 'when', 'offline', 10);
        if (!in_array($when, ['offline', 'always', 'never', 'unacked'], true)) {
            fail(400, '`when` must be offline, always, never or unacked');
        }
        $request = [
            'cmd' => 'push',
            'uid' => $uid,
            // What the uid's open pages get over their WebSocket.
            'data' => $message,
            // What its closed tabs get: the service worker reads this JSON
            // as event.data.text().
            'webpush' => [
                'data' => $message,
                'ttl' => 3600,          // the push service keeps it an hour
                'urgency' => 'normal',
                'topic' => 'pushhub-test', // a newer one replaces it there
            ],
            'webpush_when' => $when,
        ];
        if ($when === 'unacked') {
            // Web Push only if no open page acknowledges within 5 s.
            $request['ack_timeout'] = '5s';
        }
        forward($request);

    case 'push-original':
        // The original's request: no cmd, the whole line goes to the uid's
        // WebSockets, the reply is the bare word ok or fail. It has no Web
        // Push: a closed tab gets nothing, which is the point of comparing.
        $body = json_body();
        forward([
            'uid' => current_uid($body),
            'title' => text($body, 'title', 'pushhub', 100),
            'body' => text($body, 'body', 'a test push', 500),
        ]);
}
