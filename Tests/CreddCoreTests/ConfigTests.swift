import CreddCore
import Foundation
import Testing

@Suite struct ConfigTests {
    let env = RuntimeEnvironment(uid: 1000, environment: ["HOME": "/home/dev", "XDG_RUNTIME_DIR": "/run/user/1000"])
    let root = RuntimeEnvironment(uid: 0, environment: ["HOME": "/root"])

    @Test func defaultsForAUserInstance() {
        let c = CreddConfig.defaults(env)
        #expect(c.listen.unix?.path == "/run/user/1000/credd/credd.sock")
        #expect(c.listen.tcp == [TCPAddress(host: "127.0.0.1", port: 9703)])
        #expect(c.listen.tokenFile == "/run/user/1000/credd/token")
        #expect(c.access.allowUids == [1000, 0])
        #expect(c.sets.map(\.name) == ["default"])
        #expect(c.sets[0].source == .imds)
        #expect(c.imds.endpoint == "http://169.254.169.254")
    }

    @Test func defaultsForASystemInstance() {
        let c = CreddConfig.defaults(root)
        #expect(c.listen.unix?.path == "/run/credd/credd.sock")
        #expect(c.listen.tcp == [TCPAddress(host: "127.0.0.1", port: 9702)])
        #expect(RuntimeEnvironment(uid: 0, environment: ["RUNTIME_DIRECTORY": "/run/x"]).runtimeDirectory == "/run/x")
    }

    @Test func configPathOrder() {
        #expect(env.configPath(explicit: "/a.yaml").path == "/a.yaml")
        #expect(RuntimeEnvironment(uid: 1000, environment: ["CREDD_CONFIG": "/b.yaml"]).configPath(explicit: nil).path == "/b.yaml")
        #expect(root.configPath(explicit: nil).path == "/etc/credd/credd.yaml")
        #expect(env.configPath(explicit: nil).path == "/home/dev/.config/credd/credd.yaml")
        #expect(RuntimeEnvironment(uid: 1000, environment: ["HOME": "/h", "XDG_CONFIG_HOME": "/x"]).configPath(explicit: nil).path == "/x/credd/credd.yaml")
    }

    @Test func imdsEndpointFromTheEnvironment() {
        #expect(RuntimeEnvironment(uid: 0, environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1/"]).imdsEndpoint == "http://127.0.0.1:1")
        #expect(RuntimeEnvironment(uid: 0, environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"]).imdsEndpoint == "http://[fd00:ec2::254]")
    }

    @Test func theAnnotatedExampleParses() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/credd.yaml")
        let c = try CreddConfig.parse(try String(contentsOf: url, encoding: .utf8), file: url.path, environment: root)
        #expect(c.sets.contains { $0.name == "default" })
    }

    @Test func aFullConfig() throws {
        let yaml = """
            listen:
              unix: {path: /tmp/x/credd.sock, mode: "0600"}
              tcp: ["127.0.0.1:9000", "[::1]:9001", "localhost:9002"]
              token_file: /tmp/x/token
            access: {allow_uids: [1000, 1001], allow_gids: [0]}
            imds: {endpoint: "http://127.0.0.1:8080/", allow_v1: true, role: web, poll_interval: 30s, timeout: 250ms, attempts: 2}
            server: {cold_start_wait: 50ms}
            log: {level: debug, audit: false}
            credentials:
              default: {source: imds}
              deploy:
                source: assume-role
                from: default
                role_arn: arn:aws:iam::123456789012:role/deploy
                region: eu-west-1
                duration: 2h
                access: {allow_uids: [1001], token_file: /tmp/x/deploy.token}
            """
        let c = try CreddConfig.parse(yaml, file: "t.yaml", environment: env)
        #expect(c.listen.unix == UnixListenConfig(path: "/tmp/x/credd.sock", mode: 0o600, group: nil))
        #expect(c.listen.tcp.map(\.description) == ["127.0.0.1:9000", "[::1]:9001", "127.0.0.1:9002"])
        #expect(c.access.allowUids == [1000, 1001])
        #expect(c.imds.endpoint == "http://127.0.0.1:8080")
        #expect(c.imds.allowV1 && c.imds.role == "web" && c.imds.pollInterval == .seconds(30) && c.imds.timeout == .milliseconds(250))
        #expect(c.server.coldStartWait == .milliseconds(50))
        #expect(c.log.audit == false)
        #expect(c.chain(of: "deploy") == ["deploy (assume-role)", "default (imds)"])
        guard case .assumeRole(let ar) = c.set(named: "deploy")?.source else { Issue.record("not assume-role"); return }
        #expect(ar.duration == .seconds(7200) && ar.region == "eu-west-1")
        #expect(c.set(named: "deploy")?.access?.tokenFile == "/tmp/x/deploy.token")
    }

    struct ErrorCase: Sendable, CustomTestStringConvertible {
        var yaml: String
        var key: String
        var line: Int?
        var mentions: String
        var testDescription: String { "\(key): \(mentions)" }
    }

    static let errors: [ErrorCase] = [
        .init(yaml: "listen:\n  tcp: [\"10.0.0.1:9702\"]\n", key: "listen.tcp[0]", line: 2, mentions: "not a loopback address"),
        .init(yaml: "listen:\n  tcp: [\"0.0.0.0:9702\"]\n", key: "listen.tcp[0]", line: 2, mentions: "not a loopback address"),
        .init(yaml: "listen:\n  tcp: [\"127.0.0.1\"]\n", key: "listen.tcp[0]", line: 2, mentions: "host:port"),
        .init(yaml: "lisen: {}\n", key: "lisen", line: 1, mentions: "unknown key \"lisen\""),
        .init(yaml: "imds:\n  poll_interval: soon\n", key: "imds.poll_interval", line: 2, mentions: "not a duration"),
        .init(yaml: "imds:\n  attempts: 0\n", key: "imds.attempts", line: 2, mentions: "out of range"),
        .init(yaml: "imds:\n  allow_v1: maybe\n", key: "imds.allow_v1", line: 2, mentions: "true or false"),
        .init(yaml: "listen:\n  unix: {path: relative.sock}\n", key: "listen.unix.path", line: 2, mentions: "absolute path"),
        .init(yaml: "listen:\n  unix: {path: /x.sock, mode: rw}\n", key: "listen.unix.mode", line: 2, mentions: "octal"),
        .init(yaml: "credentials:\n  default: {source: magic}\n", key: "credentials.default.source", line: 2, mentions: "unknown source"),
        .init(yaml: "credentials:\n  default: {}\n", key: "credentials.default", line: 2, mentions: "missing \"source\""),
        .init(yaml: "credentials:\n  default: {source: imds, role_arn: x}\n", key: "credentials.default.role_arn", line: 2, mentions: "unknown key"),
        .init(yaml: "credentials:\n  \"a/b\": {source: imds}\n", key: "credentials.a/b", line: 2, mentions: "not a valid set name"),
        .init(yaml: "credentials:\n  r: {source: assume-role, from: default, role_arn: \"arn:aws:iam::1:role/x\"}\n", key: "credentials.r", line: 2, mentions: "missing \"region\""),
        .init(yaml: "credentials:\n  r: {source: assume-role, from: nowhere, role_arn: \"arn:aws:iam::1:role/x\", region: eu-west-1}\n", key: "credentials.r.from", line: nil, mentions: "not a credential set"),
        .init(yaml: "credentials:\n  a: {source: assume-role, from: b, role_arn: \"arn:aws:iam::1:role/x\", region: eu-west-1}\n  b: {source: assume-role, from: a, role_arn: \"arn:aws:iam::1:role/y\", region: eu-west-1}\n", key: "credentials.a.from", line: nil, mentions: "cycle"),
        .init(yaml: "credentials:\n  d: {source: imds}\n  r: {source: assume-role, from: d, role_arn: \"arn:aws:iam::1:role/x\", region: us-east-1, endpoint: \"https://sts.amazonaws.com\"}\n", key: "credentials.r.endpoint", line: 3, mentions: "version 1 session tokens"),
        .init(yaml: "credentials:\n  d: {source: imds}\n  r: {source: assume-role, from: d, role_arn: \"not-an-arn\", region: us-east-1}\n", key: "credentials.r.role_arn", line: 3, mentions: "not a role ARN"),
        .init(yaml: "listen: [1, 2\n", key: "", line: nil, mentions: "not valid YAML"),
        .init(yaml: "listen:\n  tcp: []\n  tcp: []\n", key: "listen", line: nil, mentions: "keys to be unique"),
    ]

    @Test(arguments: errors)
    func errorsNameTheFileTheLineAndTheKey(_ c: ErrorCase) {
        do {
            _ = try CreddConfig.parse(c.yaml, file: "/etc/credd/credd.yaml", environment: env)
            Issue.record("accepted:\n\(c.yaml)")
        } catch let e as ConfigError {
            #expect(e.file == "/etc/credd/credd.yaml")
            if !c.key.isEmpty && c.key != "listen" { #expect(e.key == c.key, "\(e)") }
            if let line = c.line { #expect(e.line == line, "\(e)") }
            #expect(e.description.contains(c.mentions), "\(e)")
            #expect(e.description.hasPrefix("/etc/credd/credd.yaml"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func emptyFileMeansDefaults() throws {
        let c = try CreddConfig.parse("", file: "e.yaml", environment: env)
        #expect(c.sets.map(\.name) == ["default"])
    }

    @Test func globalEndpointWithTheExplicitFlag() throws {
        let yaml = "credentials:\n  d: {source: imds}\n  r: {source: assume-role, from: d, role_arn: \"arn:aws:iam::123456789012:role/x\", region: us-east-1, endpoint: \"https://sts.amazonaws.com\", allow_global_endpoint: true}\n"
        let c = try CreddConfig.parse(yaml, file: "g.yaml", environment: env)
        guard case .assumeRole(let ar) = c.set(named: "r")?.source else { Issue.record("no set"); return }
        #expect(ar.endpoint == "https://sts.amazonaws.com")
    }

    @Test func missingExplicitFileIsAnError() {
        #expect(throws: ConfigError.self) { try CreddConfig.load(explicitPath: "/nonexistent/credd.yaml", environment: env) }
        // An absent default file means the built-in defaults.
        let c = try? CreddConfig.load(explicitPath: nil, environment: RuntimeEnvironment(uid: 1000, environment: ["HOME": "/nonexistent"]))
        #expect(c?.file == nil)
    }
}
