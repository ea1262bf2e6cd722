// credd's command line: argument parsing and wiring only; the daemon is built by CreddServer.Daemon.
import ArgumentParser
import CreddCore
import CreddServer
import CreddSystemd
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Exit codes (documented in README): 0 ok, 1 credd answered an error, 64 usage, 69 credd unreachable,
/// 77 permission denied, 78 configuration error.
enum Exit {
    static let answeredError: Int32 = 1
    static let usage: Int32 = 64
    static let unavailable: Int32 = 69
    static let permission: Int32 = 77
    static let config: Int32 = 78
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: $CREDD_CONFIG, /etc/credd/credd.yaml for root, else ~/.config/credd/credd.yaml).")
    var config: String?

    func load() throws -> (CreddConfig, RuntimeEnvironment) {
        let env = RuntimeEnvironment()
        do {
            return (try CreddConfig.load(explicitPath: config, environment: env), env)
        } catch let e as ConfigError {
            FileHandle.standardError.write(Data("credd: \(e)\n".utf8))
            throw ExitCode(Exit.config)
        }
    }
}

// The entry point is this top-level code (with more than one file in the target, main.swift is top-level code;
// SwiftPM passes -parse-as-library only to single-file executables). It is synchronous on purpose: an async
// top-level main would start on libdispatch's main queue before anything here could run. Instead:
// 1. `credd serve` blocks its signals before any other thread exists (ServeSignals takes them on a thread);
// 2. credd's executors replace Swift's default ones (tasks on one NIO event loop, the main actor here), so
//    nothing ever starts libdispatch's worker pool and its 1 Hz monitor (Executors.swift);
// 3. the command runs in a task, and this thread serves the main actor until the command exits.
if CommandLine.arguments.dropFirst().first == "serve" { ServeSignals.blockInEveryThread() }
CreddExecutors.install()
Task.detached {
    await Credd.main(nil)
    exit(0)
}
CreddExecutors.runMainThread()

struct Credd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credd",
        abstract: "Serves AWS credentials to every local process through the container-credentials endpoint.",
        discussion: """
            Exit codes: 0 success; 1 credd answered with an error; 64 usage error; 69 credd unreachable; \
            77 permission denied; 78 configuration error.
            """,
        subcommands: [
            Serve.self, Get.self, Status.self, ConfigCommand.self, Token.self, Doctor.self, Env.self, Exec.self, Completions.self,
        ])
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon in the foreground (logs to stderr or the journal; graceful on SIGTERM/SIGINT; SIGHUP reloads).")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let (config, env) = try options.load()
        try? ProcessHardening.setNonDumpable()
        raiseFileLimit()
        let logger = makeLogger(level: config.log.level)

        var hooks = DaemonHooks()
        let notifier = SystemdNotifier()
        let passed: SystemdListeners
        do {
            passed = try SystemdListeners.take()
        } catch {
            logger.error("cannot use the sockets systemd passed: \(error)")
            throw ExitCode(Exit.config)
        }
        for fd in passed.sockets {
            switch fd.name {
            case SystemdListeners.unixName: hooks.inheritedListeners.append(.inherited(fd: fd.fd, name: fd.name, transport: .unix))
            case SystemdListeners.tcpName: hooks.inheritedListeners.append(.inherited(fd: fd.fd, name: fd.name, transport: .tcp))
            default: logger.warning("ignoring a passed socket with an unknown FileDescriptorName", metadata: ["credd.fd": "\(fd)"])
            }
        }
        if let storeFD = passed.stored(named: SystemdListeners.storePrefix) {
            do {
                hooks.adoptedState = try CredentialStateSnapshot.decode(try CredentialStateMemfd.read(fd: storeFD))
            } catch {
                logger.warning("ignoring the credentials kept by systemd across the restart: they are malformed (\(error))")
            }
            close(storeFD)
        }
        if notifier.isEnabled {
            hooks.ready = { line in
                _ = try? notifier.status(line)
                _ = try? notifier.ready()
            }
            hooks.reloading = { _ = try? notifier.reloading() }
            hooks.stopping = { _ = try? notifier.stopping() }
            hooks.status = { line in _ = try? notifier.status(line) }
            hooks.credentialsChanged = { snapshot in
                // Replace the stored memfd: systemd keeps the fd, never a file on disk.
                guard let fd = try? CredentialStateMemfd.create(snapshot.encoded()) else { return }
                _ = try? notifier.removeFD(name: SystemdListeners.storePrefix)
                _ = try? notifier.storeFD(fd, name: SystemdListeners.storePrefix)
                close(fd)
            }
            if let interval = notifier.watchdogInterval {
                // A quarter of WATCHDOG_USEC (systemd's advice is at most half): a ping may come up to three
                // quarters late, e.g. behind a burst of 10,000 connections, before systemd kills credd. At
                // WatchdogSec=30 that is 8 wake-ups a minute, each a few microseconds; they also carry the
                // wall-clock check and the STATUS= update, which therefore need no timer of their own.
                let quarter = interval / 4
                hooks.watchdog = (TimeAmount.nanoseconds(Int64(timeInterval(quarter) * 1e9)), { _ = try? notifier.watchdogPing() })
            }
        }
        // Serve on the loop every task runs on: one thread does all the work.
        hooks.eventLoopGroup = CreddExecutors.eventLoopGroup
        // Start-up and refreshes run code the answer path never does: its pages are released when they end.
        let releaser = ReadOnlyPageReleaser {
            let started = ContinuousClock.now
            guard let released = ReadOnlyPages.release() else { return }
            let took = (ContinuousClock.now - started).components
            logger.debug(
                "released the mappings of read-only pages",
                metadata: [
                    "credd.pages": "\(released.pages)", "credd.mappings": "\(released.mappings)",
                    "credd.micros": "\(took.seconds * 1_000_000 + took.attoseconds / 1_000_000_000_000)",
                ])
        }
        hooks.settled = { releaser.request() }

        let daemon = Daemon(config: config, environment: env, logger: logger, hooks: hooks)
        // No signals for the group: ServeSignals takes them on a thread of its own (no libdispatch signal source).
        let group = ServiceGroup(configuration: .init(services: [.init(service: daemon)], logger: logger))
        let explicitConfig = options.config
        let stopping = NIOLockedValueBox(false)
        ServeSignals.startWaiting { signal in
            if signal == SIGHUP {
                // SIGHUP: re-read the config; a valid one applies, an invalid one is logged and the old one stays.
                guard !stopping.withLockedValue({ $0 }) else { return }
                daemon.reload { try CreddConfig.load(explicitPath: explicitConfig, environment: daemon.environment) }
            } else {
                // SIGTERM, SIGINT: graceful shutdown (a second one changes nothing).
                stopping.withLockedValue { $0 = true }
                logger.debug("signal received; stopping gracefully", metadata: ["credd.signal": "\(signal)"])
                Task { await group.triggerGracefulShutdown() }
            }
        }
        // A wall clock that was set (NTP step, resume from suspend) refreshes what became due, at once.
        WallClockWatcher.start { daemon.wallClockChanged() }
        do {
            try await group.run()
        } catch let e as ListenerError {
            logger.critical("\(e.message)")
            throw ExitCode(Exit.config)
        } catch let e as TokenFileError {
            logger.critical("\(e.description)")
            throw ExitCode(Exit.config)
        } catch let e as ConfigError {
            logger.critical("\(e.description)")
            throw ExitCode(Exit.config)
        }
    }
}

func makeLogger(level: String) -> Logger {
    let logLevel = Logger.Level(rawValue: level) ?? .info
    let useJournal = JournalLogHandler.isJournalStream()
    LoggingSystem.bootstrap { label in
        if useJournal {
            var h = JournalLogHandler(label: label)
            h.logLevel = logLevel
            return h
        }
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = logLevel
        return h
    }
    return Logger(label: "credd")
}

/// 10,000 held connections need more than the default 1024 descriptors.
func raiseFileLimit() {
    var limit = rlimit()
    if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a set's credentials (over the Unix socket).",
        discussion: "`credential_process = credd get --format process` in ~/.aws/config makes any SDK use credd.")
    enum Format: String, ExpressibleByArgument, CaseIterable { case json, process, env }
    @Argument(help: "Credential set name.") var name: String = "default"
    @Option(help: "json (the endpoint's answer), process (credential_process, Version 1) or env (export lines).") var format: Format = .json
    @Option(help: "Unix socket path (default: from the config).") var socket: String?
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let socketPath = try socket ?? options.load().0.listen.unix?.path ?? ""
        let (status, body) = try await request(socketPath, "/v1/credentials/\(name)")
        guard status == 200, let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            FileHandle.standardError.write(Data("credd: \(LocalClient.errorMessage(body))\n".utf8))
            throw ExitCode(status == 403 || status == 401 ? Exit.permission : Exit.answeredError)
        }
        switch format {
        case .json:
            print(String(decoding: body, as: UTF8.self))
        case .process:
            let doc = ContainerCredentialsDocument.encodeProcess(json)
            let data = try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        case .env:
            for (k, v) in [("AWS_ACCESS_KEY_ID", "AccessKeyId"), ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"), ("AWS_SESSION_TOKEN", "Token")] {
                if let value = json[v] as? String { print("export \(k)=\(shellQuote(value))") }
            }
            if let e = json["Expiration"] as? String { print("export AWS_CREDENTIAL_EXPIRATION=\(shellQuote(e))") }
        }
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

func request(_ socket: String, _ path: String) async throws -> (Int, [UInt8]) {
    guard !socket.isEmpty else {
        FileHandle.standardError.write(Data("credd: no Unix socket configured (listen.unix); pass --socket.\n".utf8))
        throw ExitCode(Exit.usage)
    }
    do {
        return try await LocalClient.get(socket: socket, path: path)
    } catch let e as LocalClientError {
        FileHandle.standardError.write(Data("credd: \(e.message)\n".utf8))
        throw ExitCode(e.exitCode)
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show each set's source, state, expiry, refresh times and last error (no secrets).")
    @Flag(help: "Print the status document as JSON (schema version 1).") var json = false
    @Flag(help: "Redraw every second with live countdowns until Ctrl-C (with --json: one document per line).") var watch = false
    @Option(help: "Unix socket path (default: from the config).") var socket: String?
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let socketPath = try socket ?? options.load().0.listen.unix?.path ?? ""
        if watch { return try await StatusWatch.run(socket: socketPath, json: json) }
        let (status, body) = try await request(socketPath, "/v1/status")
        guard status == 200 else {
            FileHandle.standardError.write(Data("credd: \(LocalClient.errorMessage(body))\n".utf8))
            throw ExitCode(status == 403 ? Exit.permission : Exit.answeredError)
        }
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        let doc = try StatusDocument.decoder().decode(StatusDocument.self, from: Data(body))
        print(StatusTable.render(doc, now: Date()))
        if doc.sets.contains(where: { $0.state == .failing || $0.state == .actionRequired }) { throw ExitCode(Exit.answeredError) }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Configuration tools.", subcommands: [Check.self])
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the config file; print what it configures. Exit 78 on errors.")
        @OptionGroup var options: CommonOptions
        func run() async throws {
            let (config, env) = try options.load()
            print("\(config.file ?? "no config file: built-in defaults"): OK")
            for w in config.warnings(environment: env) { print("  warning: \(w)") }
            if let u = config.listen.unix { print("  unix socket: \(u.path) (mode \(String(u.mode, radix: 8))\(u.group.map { ", group \($0)" } ?? ""))") }
            for t in config.listen.tcp { print("  tcp: \(t)") }
            print("  token file: \(config.listen.tokenFile)")
            for set in config.sets { print("  set \(set.name): \(config.chain(of: set.name).joined(separator: " ← "))") }
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Token file tools.", subcommands: [Ensure.self])
    struct Ensure: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the token file(s) when absent (32 random bytes, base64url, no newline, mode 0600, or 0640 with the socket's group).")
        @OptionGroup var options: CommonOptions
        @Option(help: "Group that may read the token (default: listen.unix.group).") var group: String?
        func run() async throws {
            let (config, _) = try options.load()
            let groupName = group ?? config.listen.unix?.group
            var gid: gid_t?
            if let g = groupName {
                gid = UInt32(g) ?? getgrnam(g).map { $0.pointee.gr_gid }
                if gid == nil {
                    FileHandle.standardError.write(Data("credd: no group named \(g).\n".utf8))
                    throw ExitCode(Exit.config)
                }
            }
            do {
                _ = try TokenFile.ensure(config.listen.tokenFile, group: gid)
                for set in config.sets { if let f = set.access?.tokenFile { _ = try TokenFile.ensure(f, group: nil) } }
            } catch {
                FileHandle.standardError.write(Data("credd: \(error)\n".utf8))
                throw ExitCode(Exit.config)
            }
            print(config.listen.tokenFile)
        }
    }
}
