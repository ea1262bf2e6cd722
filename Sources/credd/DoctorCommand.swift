// `credd doctor`: runs the checks of CreddCore's Doctor and prints ✓/✗/– with the fixes (or JSON).
import ArgumentParser
import CreddCore
import Foundation

struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find out why credentials fail: credd's sockets and token, this shell's environment, IMDS, aws login, STS and the clock.",
        discussion: """
            Run it as the user whose programs should use credd, in the shell they start from. Each check prints \
            ✓ (pass), ✗ (fail, with the fix) or – (does not apply here, with why). Exit status 0 when no check \
            failed, 1 otherwise. --json prints the same report as JSON (schema version 1: version, ok, config, set, \
            checks[] of {id, group, status, message, fix}).
            """)

    @Flag(help: "Print the report as JSON (schema version 1).") var json = false
    @Option(help: "Check this credential set and the sets it is made from (default: every set).") var set: String?
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let env = RuntimeEnvironment()
        let report: DoctorReport
        do {
            let config = try CreddConfig.load(explicitPath: options.config, environment: env)
            report = await DoctorProbe(config: config, set: set, environment: env.environment, home: env.home).run()
        } catch let e as ConfigError {
            report = DoctorProbe.reportWithoutConfig(
                path: env.configPath(explicit: options.config).path, error: e.description, environment: env.environment, home: env.home)
        }
        if json {
            print(String(decoding: report.jsonData(), as: UTF8.self))
        } else {
            print(report.text())
        }
        if !report.ok { throw ExitCode(1) }
    }
}
