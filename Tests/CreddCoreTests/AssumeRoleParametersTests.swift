// AssumeRole parameters: the default session name, validation messages, the session policy setting.
import CreddCore
import Foundation
import Testing

@Suite("AssumeRole parameters")
struct AssumeRoleParametersTests {
    static func isValidSessionName(_ s: String) -> Bool {
        (2...64).contains(s.count)
            && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_+=,.@-".contains($0)) }
    }

    @Test(
        "default session name: credd-USER@HOST, invalid characters replaced, at most 64 characters",
        arguments: [
            ("alice", "build-01.example.com", "credd-alice@build-01.example.com"),
            ("al ice", "höst", "credd-al-ice@h-st"),
            ("bob/admin", "host:1", "credd-bob-admin@host-1"),
            ("", "", "credd-unknown@localhost"),
            ("u", String(repeating: "h", count: 100), "credd-u@" + String(repeating: "h", count: 56)),
        ])
    func defaultSessionName(user: String, host: String, expected: String) {
        let name = AssumeRoleParameters.defaultSessionName(user: user, host: host)
        #expect(name == expected)
        #expect(Self.isValidSessionName(name))
    }

    @Test("the default for this process is valid, and is used when no name is given")
    func defaultForThisProcess() {
        let name = AssumeRoleParameters.defaultSessionName()
        #expect(Self.isValidSessionName(name), "\(name)")
        #expect(name.hasPrefix("credd-"))
        #expect(AssumeRoleParameters(roleArn: "arn:aws:iam::123456789012:role/x").roleSessionName == name)
        #expect(AssumeRoleParameters(roleArn: "arn:aws:iam::123456789012:role/x").duration == .seconds(3600))
    }

    @Test("valid parameters have no problem")
    func valid() {
        let p = AssumeRoleParameters(
            roleArn: "arn:aws:iam::123456789012:role/path/deploy", roleSessionName: "credd-a@b", duration: .seconds(43_200),
            externalId: "ext:id/1+2=3@x,y", policy: #"{"Version":"2012-10-17","Statement":[]}"#, sourceIdentity: "alice")
        #expect(p.validationProblems(setName: "deploy") == [])
        let cn = AssumeRoleParameters(roleArn: "arn:aws-cn:iam::123456789012:role/x", roleSessionName: "ab", duration: .seconds(900))
        #expect(cn.validationProblems(setName: "deploy") == [])
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var what: String
        var parameters: AssumeRoleParameters
        var says: [String]
        var testDescription: String { what }
    }

    static let base = AssumeRoleParameters(roleArn: "arn:aws:iam::123456789012:role/deploy", roleSessionName: "credd-a@b")

    static func with(_ change: (inout AssumeRoleParameters) -> Void) -> AssumeRoleParameters {
        var p = base
        change(&p)
        return p
    }

    static let bad: [Bad] = [
        Bad(what: "not an ARN", parameters: with { $0.roleArn = "deploy" }, says: ["credentials.deploy.role_arn", "not an ARN"]),
        Bad(what: "a user ARN", parameters: with { $0.roleArn = "arn:aws:iam::123456789012:user/bob" }, says: ["not a role ARN"]),
        Bad(what: "no account", parameters: with { $0.roleArn = "arn:aws:iam:::role/x" }, says: ["12-digit account"]),
        Bad(what: "an S3 ARN", parameters: with { $0.roleArn = "arn:aws:s3:::bucket" }, says: ["not an IAM ARN"]),
        Bad(what: "session name with a space", parameters: with { $0.roleSessionName = "a b" }, says: ["role_session_name", "2 to 64"]),
        Bad(what: "session name too short", parameters: with { $0.roleSessionName = "a" }, says: ["role_session_name"]),
        Bad(what: "session name too long", parameters: with { $0.roleSessionName = String(repeating: "a", count: 65) }, says: ["role_session_name"]),
        Bad(what: "duration under 15 min", parameters: with { $0.duration = .seconds(899) }, says: ["credentials.deploy.duration", "900"]),
        Bad(what: "duration over 12 h", parameters: with { $0.duration = .seconds(43_201) }, says: ["43200"]),
        Bad(what: "fractional duration", parameters: with { $0.duration = .milliseconds(3_600_500) }, says: ["whole seconds"]),
        Bad(what: "external id with a space", parameters: with { $0.externalId = "a b" }, says: ["external_id"]),
        Bad(what: "external id too short", parameters: with { $0.externalId = "a" }, says: ["external_id"]),
        Bad(what: "policy not JSON", parameters: with { $0.policy = "{not json" }, says: ["credentials.deploy.policy", "not a JSON object"]),
        Bad(what: "policy a JSON array", parameters: with { $0.policy = "[]" }, says: ["not a JSON object"]),
        Bad(what: "policy too long", parameters: with { $0.policy = #"{"Sid":""# + String(repeating: "x", count: 2100) + #""}"# }, says: ["2048"]),
        Bad(what: "source identity with aws: prefix", parameters: with { $0.sourceIdentity = "aws:me" }, says: ["source_identity", "aws:"]),
        Bad(what: "source identity with a slash", parameters: with { $0.sourceIdentity = "a/b" }, says: ["source_identity"]),
    ]

    @Test("each invalid setting gives one message naming its key", arguments: bad)
    func invalid(_ row: Bad) {
        let problems = row.parameters.validationProblems(setName: "deploy")
        #expect(problems.count == 1, "\(problems)")
        for fragment in row.says { #expect(problems.first?.contains(fragment) == true, "\(problems)") }
        #expect(problems.first?.hasSuffix(".") == true)
    }

    // MARK: policy setting

    @Test("an inline policy is used as given (trimmed)")
    func inlinePolicy() throws {
        let policy = try AssumeRoleParameters.loadPolicy("  {\"Version\": \"2012-10-17\"}\n", setName: "deploy", configDirectory: nil).get()
        #expect(policy == "{\"Version\": \"2012-10-17\"}")
    }

    @Test("a policy file is read, relative to the config directory or absolute")
    func policyFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("credd-policy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": []\n}"
        try (json + "\n").write(to: dir.appendingPathComponent("session.json"), atomically: true, encoding: .utf8)

        #expect(try AssumeRoleParameters.loadPolicy("session.json", setName: "deploy", configDirectory: dir).get() == json)
        let absolute = dir.appendingPathComponent("session.json").path
        #expect(try AssumeRoleParameters.loadPolicy(absolute, setName: "deploy", configDirectory: nil).get() == json)

        try "not json".write(to: dir.appendingPathComponent("bad.json"), atomically: true, encoding: .utf8)
        let bad = AssumeRoleParameters.loadPolicy("bad.json", setName: "deploy", configDirectory: dir)
        guard case .failure(let badError) = bad else { Issue.record("bad.json was accepted"); return }
        #expect(badError.message.contains("credentials.deploy.policy: the file \(dir.appendingPathComponent("bad.json").path)"))
        #expect(badError.message.contains("not a JSON object"))

        let missing = AssumeRoleParameters.loadPolicy("missing.json", setName: "deploy", configDirectory: dir)
        guard case .failure(let missingError) = missing else { Issue.record("missing.json was accepted"); return }
        #expect(missingError.message.contains("missing.json"))
        #expect(missingError.message.contains("cannot be read"))
    }

    @Test("broken inline JSON is refused with the key named")
    func brokenInline() {
        let result = AssumeRoleParameters.loadPolicy("{\"Version\": ", setName: "deploy", configDirectory: nil)
        guard case .failure(let error) = result else { Issue.record("broken JSON was accepted"); return }
        #expect(error.message.hasPrefix("credentials.deploy.policy is not a JSON object"))
    }
}
