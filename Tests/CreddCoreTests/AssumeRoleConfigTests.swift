// From an assume-role set's config to its parameters, problems and warnings (what `credd config check` shows).
import Foundation
import Testing

// The config type's memberwise initialiser is internal to CreddCore.
@testable import CreddCore

@Suite("AssumeRole set config")
struct AssumeRoleConfigTests {
    static func config(_ change: (inout AssumeRoleSetConfig) -> Void = { _ in }) -> AssumeRoleSetConfig {
        var c = AssumeRoleSetConfig(
            from: "default", roleArn: "arn:aws:iam::123456789012:role/deploy", roleSessionName: nil, duration: .seconds(3600),
            externalId: nil, policy: nil, policyFile: nil, sourceIdentity: nil, region: "eu-west-1", endpoint: nil,
            allowGlobalEndpoint: false)
        change(&c)
        return c
    }

    @Test("a plain config has no problem and no warning; its parameters carry the defaults")
    func plain() throws {
        let c = Self.config()
        #expect(AssumeRoleSource.validationProblems(setName: "deploy", config: c, environment: [:]) == [])
        #expect(AssumeRoleSource.warnings(setName: "deploy", config: c, environment: [:]) == [])
        let p = try AssumeRoleSource.parameters(setName: "deploy", config: c).get()
        #expect(p.roleSessionName == AssumeRoleParameters.defaultSessionName())
        #expect(p.duration == .seconds(3600))
    }

    @Test("policy_file is read; a bad one is a problem naming policy_file")
    func policyFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("credd-arc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("p.json")
        try #"{"Version": "2012-10-17", "Statement": []}"#.write(to: file, atomically: true, encoding: .utf8)
        let good = Self.config { $0.policyFile = file.path }
        #expect(try AssumeRoleSource.parameters(setName: "deploy", config: good).get().policy == #"{"Version": "2012-10-17", "Statement": []}"#)

        try "nope".write(to: file, atomically: true, encoding: .utf8)
        let problems = AssumeRoleSource.validationProblems(setName: "deploy", config: good, environment: [:])
        #expect(problems.count == 1)
        #expect(problems.first?.hasPrefix("credentials.deploy.policy_file: the file \(file.path)") == true, "\(problems)")
    }

    @Test("endpoint problems come from the config and from AWS_ENDPOINT_URL_STS")
    func endpointProblems() {
        let global = Self.config { $0.endpoint = "https://sts.amazonaws.com" }
        #expect(AssumeRoleSource.validationProblems(setName: "deploy", config: global, environment: [:]).first?
            .contains("credentials.deploy.allow_global_endpoint: true") == true)
        let fromEnvironment = AssumeRoleSource.validationProblems(
            setName: "deploy", config: Self.config(), environment: ["AWS_ENDPOINT_URL_STS": "https://sts.amazonaws.com"])
        #expect(fromEnvironment.first?.hasPrefix("AWS_ENDPOINT_URL_STS points at the global STS endpoint") == true, "\(fromEnvironment)")
        let clear = Self.config { $0.endpoint = "http://sts.example.com" }
        #expect(AssumeRoleSource.validationProblems(setName: "deploy", config: clear, environment: [:]).first?.contains("plain http") == true)
    }

    @Test("the global endpoint with the flag: no problem, one warning about version 1 tokens")
    func globalAllowed() {
        let c = Self.config {
            $0.endpoint = "https://sts.amazonaws.com"
            $0.allowGlobalEndpoint = true
        }
        #expect(AssumeRoleSource.validationProblems(setName: "deploy", config: c, environment: [:]) == [])
        let warnings = AssumeRoleSource.warnings(setName: "deploy", config: c, environment: [:])
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("version 1") == true)
    }

    @Test("several problems are all reported")
    func several() {
        let c = Self.config {
            $0.roleSessionName = "has space"
            $0.sourceIdentity = "aws:x"
            $0.region = "aws-global"
        }
        let problems = AssumeRoleSource.validationProblems(setName: "deploy", config: c, environment: [:])
        #expect(problems.count == 3, "\(problems)")
    }
}
