//! Settings from flags, environment and file, and their validation.
use super::*;

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("5d").is_err());
}

#[test]
fn http_port_is_a_number_or_off_and_differs_from_the_chat_port() {
    let parse = |extra: &[&str]| {
        Config::from_args(std::iter::once("uring-chat").chain(extra.iter().copied()))
    };
    assert_eq!(parse(&[]).unwrap().http_port, Some(DEFAULT_HTTP_PORT));
    assert_eq!(parse(&["--http-port", "off"]).unwrap().http_port, None);
    assert_eq!(parse(&["--http-port", "0"]).unwrap().http_port, Some(0));
    assert!(parse(&["--http-port", "web"]).is_err());
    let same = parse(&["--port", "9000", "--http-port", "9000"]).unwrap_err();
    assert!(
        same.to_string().contains("--http-port must differ"),
        "{same}"
    );
}

#[test]
fn metrics_port_is_off_by_default_and_differs_from_the_others() {
    let parse = |extra: &[&str]| {
        Config::from_args(std::iter::once("uring-chat").chain(extra.iter().copied()))
    };
    assert_eq!(parse(&[]).unwrap().metrics_port, None);
    assert_eq!(
        parse(&["--metrics-port", "9100"]).unwrap().metrics_port,
        Some(9100)
    );
    assert_eq!(
        parse(&["--metrics-port", "0", "--http-port", "0"])
            .unwrap()
            .metrics_port,
        Some(0)
    );
    for clash in [["--port", "9100"], ["--http-port", "9100"]] {
        let args = [clash[0], clash[1], "--metrics-port", "9100"];
        let error = parse(&args).unwrap_err().to_string();
        assert!(error.contains("--metrics-port"), "{error}");
    }
}

#[test]
fn flag_beats_file_and_file_beats_default() {
    let dir = std::env::temp_dir().join(format!("uring-chat-config-{}", std::process::id()));
    std::fs::write(
        &dir,
        "port = 9000\nmax-frame-bytes = 4096\npresence-interval = \"250ms\"\n",
    )
    .unwrap();
    let path = dir.to_str().unwrap();
    let config = Config::from_args([
        "uring-chat",
        "--config",
        path,
        "--port",
        "7000",
        "--cores",
        "1",
    ])
    .unwrap();
    assert_eq!(config.port, 7000, "flag beats file");
    assert_eq!(config.max_frame_bytes, 4096, "file beats default");
    assert_eq!(config.presence_interval, Duration::from_millis(250));
    assert_eq!(
        config.max_outbound_bytes, DEFAULT_MAX_OUTBOUND_BYTES,
        "default stays"
    );
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn unknown_file_keys_are_rejected() {
    let dir = std::env::temp_dir().join(format!("uring-chat-badconfig-{}", std::process::id()));
    std::fs::write(&dir, "prot = 9000\n").unwrap();
    let err = Config::from_args(["uring-chat", "--config", dir.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("prot"), "{err}");
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn bad_settings_say_which() {
    let err = Config::from_args(["uring-chat", "--cores", "0"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--cores"), "{err}");
    let err = Config::from_args(["uring-chat", "--cores", "1", "--history-bytes", "600000"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--history-bytes"), "{err}");
}

#[test]
fn auth_takes_one_key_from_a_flag_or_a_file() {
    let parse = |extra: &[&str]| {
        Config::from_args(std::iter::once("uring-chat").chain(extra.iter().copied()))
    };
    assert!(matches!(parse(&[]).unwrap().auth_key, AuthKey::Off));
    let secret = parse(&["--auth-jwt-secret", "s3cret"]).unwrap().auth_key;
    assert!(matches!(secret, AuthKey::Secret(ref bytes) if bytes == b"s3cret"));
    let file = std::env::temp_dir().join(format!("uring-chat-secret-{}", std::process::id()));
    std::fs::write(&file, "from a file\n").unwrap();
    let path = file.to_str().unwrap();
    let from_file = parse(&["--auth-jwt-secret-file", path]).unwrap().auth_key;
    assert!(matches!(from_file, AuthKey::Secret(ref bytes) if bytes == b"from a file"));
    let both = parse(&["--auth-jwt-secret", "x", "--auth-jwt-secret-file", path]);
    assert!(both.unwrap_err().to_string().contains("give one of"));
    std::fs::remove_file(&file).unwrap();
    assert!(
        parse(&["--auth-jwt-public-key", path]).is_err(),
        "a missing file"
    );
    assert_eq!(
        parse(&["--auth-leeway", "5s"]).unwrap().auth_leeway,
        Duration::from_secs(5)
    );
    assert!(!format!("{:?}", parse(&["--auth-jwt-secret", "s3cret"]).unwrap()).contains("s3cret"));
}

#[test]
fn nats_is_off_by_default_and_takes_repeats_commas_and_a_file() {
    let parse = |extra: &[&str]| {
        Config::from_args(std::iter::once("uring-chat").chain(extra.iter().copied()))
    };
    let single = parse(&[]).unwrap();
    assert!(single.nats.is_empty() && single.node_name.is_none());
    let urls = ["nats://a:4222", "nats://b:4222", "nats://c:4222"];
    let repeated = parse(&["--nats", urls[0], "--nats", "nats://b:4222,nats://c:4222"]);
    assert_eq!(repeated.unwrap().nats, urls);
    let named = parse(&["--nats", urls[0], "--node-name", "east-1"]).unwrap();
    assert_eq!(named.node_name.as_deref(), Some("east-1"));
    assert!(parse(&["--nats", ""]).is_err(), "an empty URL");
    assert!(parse(&["--node-name", ""]).is_err(), "an empty name");
    assert_eq!(
        single.nats_subscription_capacity,
        CLUSTER_SUBSCRIPTION_CAPACITY
    );
    let small = parse(&["--nats", urls[0], "--nats-subscription-capacity", "8"]);
    assert_eq!(small.unwrap().nats_subscription_capacity, 8);
    assert!(
        parse(&["--nats-subscription-capacity", "0"]).is_err(),
        "a subscription with no room"
    );

    let file = std::env::temp_dir().join(format!("uring-chat-nats-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "nats = \"nats://a:4222,nats://b:4222\"\nnode-name = \"west\"\n",
    )
    .unwrap();
    let from_file = parse(&["--config", file.to_str().unwrap()]).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(from_file.nats, urls[..2]);
    assert_eq!(from_file.node_name.as_deref(), Some("west"));
}
