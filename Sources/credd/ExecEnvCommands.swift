// `credd env`, `credd exec` and `credd completions`: put a shell or one command onto credd's endpoint.
import ArgumentParser
import CreddCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The two variables that point an SDK at one of credd's sets, and the variables that would win over them.
struct ExecEnvironment {
    /// Variables removed by `credd exec` (and unset by `credd env`): each wins over the container endpoint in
    /// some SDK's credential chain, or makes the SDKs disagree (the inline token beside the token file).
    static let conflicting = [
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CREDENTIAL_EXPIRATION",
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    ]

    var fullURI: String
    var tokenFile: String

    /// The URI on credd's first TCP listener and the set's token file; exits 64/78 with a sentence when impossible.
    static func make(config: CreddConfig, set: String) throws -> ExecEnvironment {
        guard let setConfig = config.set(named: set) else {
            FileHandle.standardError.write(Data(
                "credd: no credential set named \"\(set)\" in \(config.file ?? "the built-in defaults"); sets: \(config.sets.map(\.name).joined(separator: ", ")).\n".utf8))
            throw ExitCode(Exit.usage)
        }
        guard let listener = config.listen.tcp.first else {
            FileHandle.standardError.write(Data(
                "credd: \(config.file ?? "the config") has no TCP listener (listen.tcp); SDKs can reach credd only over loopback TCP. Add one, e.g. listen.tcp: [\"127.0.0.1:9702\"].\n".utf8))
            throw ExitCode(Exit.config)
        }
        guard listener.port != 0 else {
            FileHandle.standardError.write(Data(
                "credd: listen.tcp names port 0, which credd picks at start; give a fixed port so clients can be told where credd is.\n".utf8))
            throw ExitCode(Exit.config)
        }
        let path = set == "default" ? "/v1/credentials" : "/v1/credentials/\(set)"
        return ExecEnvironment(
            fullURI: "http://\(listener)\(path)", tokenFile: setConfig.access?.tokenFile ?? config.listen.tokenFile)
    }

    /// `base` with the two variables set and the conflicting ones removed.
    func applied(to base: [String: String]) -> [String: String] {
        var env = base
        for name in Self.conflicting { env[name] = nil }
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = fullURI
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = tokenFile
        return env
    }
}

struct Env: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the lines that point this shell's SDKs at credd: eval \"$(credd env [NAME])\".",
        discussion: """
            Prints AWS_CONTAINER_CREDENTIALS_FULL_URI (the set on credd's first TCP listener) and \
            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, then unsets the variables set in this environment that would \
            win over credd (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_CONTAINER_AUTHORIZATION_TOKEN, …). \
            fish: credd env --shell fish | source
            """)
    enum Shell: String, ExpressibleByArgument, CaseIterable { case sh, fish }

    @Argument(help: "Credential set name.") var name: String = "default"
    @Option(help: "sh (also bash and zsh) or fish.") var shell: Shell = .sh
    @OptionGroup var options: CommonOptions

    func run() throws {
        let (config, env) = try options.load()
        let target = try ExecEnvironment.make(config: config, set: name)
        print(Self.lines(target, shell: shell, present: Set(env.environment.keys)).joined(separator: "\n"))
    }

    static func lines(_ target: ExecEnvironment, shell: Shell, present: Set<String>) -> [String] {
        let exports = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", target.fullURI), ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", target.tokenFile)]
        let unset = ExecEnvironment.conflicting.filter(present.contains)
        var out: [String] = []
        switch shell {
        case .sh:
            out = exports.map { "export \($0)=\(shellQuote($1))" }
            if !unset.isEmpty {
                out.append("# these would win over credd in the SDKs' credential chain:")
                out.append("unset \(unset.joined(separator: " "))")
            }
        case .fish:
            out = exports.map { "set -gx \($0) \(fishQuote($1));" }
            if !unset.isEmpty {
                out.append("# these would win over credd in the SDKs' credential chain:")
                out += unset.map { "set -e \($0);" }
            }
        }
        return out
    }

    static func fishQuote(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command that uses credd: credd exec [--set NAME] -- COMMAND [ARG…].",
        discussion: """
            Sets AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE for the set, removes \
            the variables that would win over them (\(ExecEnvironment.conflicting.joined(separator: ", "))), and \
            replaces itself with COMMAND (execve): the command keeps credd's process id, so its exit status and \
            every signal pass through unchanged. Exit 127 when COMMAND is not found, 126 when it cannot be run.
            """)

    @Option(help: "Credential set name.") var set: String = "default"
    @OptionGroup var options: CommonOptions
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.") var command: [String] = []

    func run() throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard let program = argv.first, !program.isEmpty else {
            FileHandle.standardError.write(Data("credd exec: give the command to run: credd exec [--set NAME] -- COMMAND [ARG…].\n".utf8))
            throw ExitCode(Exit.usage)
        }
        let (config, env) = try options.load()
        let target = try ExecEnvironment.make(config: config, set: set)
        let environment = target.applied(to: env.environment)
        guard let path = Self.resolve(program, path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") else {
            FileHandle.standardError.write(Data("credd exec: \(program): command not found.\n".utf8))
            throw ExitCode(127)
        }
        Self.execute(path, argv: argv, environment: environment)
        let reason = String(cString: strerror(errno))
        FileHandle.standardError.write(Data("credd exec: cannot run \(path): \(reason).\n".utf8))
        throw ExitCode(errno == ENOENT ? 127 : 126)
    }

    /// A name with a slash is used as it is; otherwise the first executable file of that name on PATH (as execvp).
    static func resolve(_ program: String, path: String) -> String? {
        if program.contains("/") { return program }
        for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + program
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// execve(2) with a clean signal state: the Swift runtime's threads may block signals, and a blocked or
    /// ignored signal would stay so in the command.
    static func execute(_ path: String, argv: [String], environment: [String: String]) {
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGTSTP, SIGTTIN, SIGTTOU] { signal(sig, SIG_DFL) }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0)=\($1)") } + [nil]
        _ = cArgs.withUnsafeBufferPointer { a in
            cEnv.withUnsafeBufferPointer { e in execve(path, a.baseAddress!, e.baseAddress!) }
        }
        // Only reached when execve failed; the process exits right after.
    }
}

struct Completions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the shell completion script: credd completions bash|zsh|fish.",
        discussion: """
            bash: credd completions bash > /usr/share/bash-completion/completions/credd; \
            zsh: credd completions zsh > /usr/share/zsh/vendor-completions/_credd; \
            fish: credd completions fish > /usr/share/fish/vendor_completions.d/credd.fish
            """)
    enum Shell: String, ExpressibleByArgument, CaseIterable { case bash, zsh, fish }
    @Argument(help: "bash, zsh or fish.") var shell: Shell

    func run() throws {
        let kind: CompletionShell
        switch shell {
        case .bash: kind = .bash
        case .zsh: kind = .zsh
        case .fish: kind = .fish
        }
        print(Credd.completionScript(for: kind))
    }
}
