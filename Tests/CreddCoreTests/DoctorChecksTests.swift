// `credd doctor`'s checks as tables: each check seen passing, failing (with its fix) and skipped where it can be.
import CreddCore
import Foundation
import Testing

private let now = Date(timeIntervalSince1970: 1_800_000_000)
private let tcp = TCPAddress(host: "127.0.0.1", port: 9702)

/// A `SetStatus` as credd's status document carries it (the type has no public memberwise initializer).
private func makeSetStatus(
    name: String, source: String, state: SetState, servedExpiration: Date? = nil, lastError: String? = nil, lastErrorCode: String? = nil
) -> SetStatus {
    var json: [String: Any] = [
        "name": name, "source": source, "summary": "", "chain": [String](), "state": state.rawValue, "consecutiveFailures": 0,
    ]
    if let servedExpiration { json["servedExpiration"] = servedExpiration.timeIntervalSince1970 }
    if let lastError { json["lastError"] = lastError }
    if let lastErrorCode { json["lastErrorCode"] = lastErrorCode }
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .secondsSince1970
    return try! decoder.decode(SetStatus.self, from: JSONSerialization.data(withJSONObject: json))
}

private func env(_ vars: [String: String]) -> CallerEnvironment { CallerEnvironment(environment: vars) }

private func profile(
    _ name: String = "default", config: [String: String]? = nil, credentialKeys: Set<String>? = nil, problems: [String] = []
) -> CallerProfileFacts {
    CallerProfileFacts(
        name: name, configFile: "/home/u/.aws/config", credentialsFile: "/home/u/.aws/credentials", config: config,
        credentialKeys: credentialKeys, problems: problems)
}

@Suite struct DoctorCreddChecksTests {
    struct SocketCase: Sendable, CustomTestStringConvertible {
        var probe: ConnectProbe
        var status: DoctorStatus
        var says: String
        var testDescription: String { "\(probe) → \(status)" }
    }

    @Test(arguments: [
        SocketCase(probe: .connected, status: .pass, says: "accepts connections on unix:/run/credd/credd.sock"),
        SocketCase(probe: .noSuchSocket, status: .fail, says: "there is no socket at /run/credd/credd.sock"),
        SocketCase(probe: .refused, status: .fail, says: "nothing accepts on it"),
        SocketCase(probe: .permissionDenied, status: .fail, says: "uid 1000 may not connect"),
        SocketCase(probe: .timedOut, status: .fail, says: "did not accept a connection"),
        SocketCase(probe: .failed("boom"), status: .fail, says: "boom"),
    ])
    func unixSocket(_ c: SocketCase) {
        let check = DoctorChecks.unixSocket(path: "/run/credd/credd.sock", probe: c.probe, uid: 1000, group: "credd")
        #expect(check.id == "credd.unix")
        #expect(check.status == c.status)
        #expect(check.message.contains(c.says), "\(check.message)")
        #expect((check.fix != nil) == (c.status == .fail))
        if c.probe == .permissionDenied { #expect(check.fix?.contains("usermod -aG credd") == true) }
    }

    @Test func noUnixSocketConfiguredIsSkippedNotPassed() {
        let check = DoctorChecks.unixSocket(path: nil, probe: nil, uid: 1000, group: nil)
        #expect(check.status == .skip)
        #expect(check.message.contains("listen.unix"))
    }

    @Test func tcpListener() {
        #expect(DoctorChecks.tcpListener(tcp, probe: .connected).status == .pass)
        let refused = DoctorChecks.tcpListener(tcp, probe: .refused)
        #expect(refused.status == .fail)
        #expect(refused.message.contains("127.0.0.1:9702"))
        #expect(DoctorChecks.noTCPListener().status == .skip)
    }

    @Test func callerAccess() {
        #expect(DoctorChecks.callerAccess(uid: 1000, set: "default", probe: .answered(HTTPAnswer(status: 200))).status == .pass)
        // 503 means the caller got past the access rules: access passes, the set's own check reports the 503.
        #expect(DoctorChecks.callerAccess(uid: 1000, set: "default", probe: .answered(HTTPAnswer(status: 503))).status == .pass)
        let denied = DoctorChecks.callerAccess(
            uid: 1001, set: "deploy",
            probe: .answered(HTTPAnswer(status: 403, errorCode: "CallerNotAllowed", errorMessage: "uid 1001 may not read credential set \"deploy\"")))
        #expect(denied.status == .fail)
        #expect(denied.message.contains("uid 1001 may not read set \"deploy\""))
        #expect(denied.fix?.contains("allow_uids") == true)
        #expect(DoctorChecks.callerAccess(uid: 1, set: "x", probe: .answered(HTTPAnswer(status: 404))).status == .fail)
        #expect(DoctorChecks.callerAccess(uid: 1000, set: "default", probe: nil).status == .skip)
    }

    @Test(arguments: [
        (TokenFileFact.valid, DoctorStatus.pass, "ends without a newline"),
        (.missing, .fail, "does not exist"),
        (.unreadable(reason: "Permission denied"), .fail, "cannot read token file"),
        (.empty, .fail, "is empty"),
        (.trailingNewline, .fail, "ends in a newline"),
        (.illegalCharacters, .fail, "cannot go in an HTTP header"),
    ])
    func tokenFile(fact: TokenFileFact, status: DoctorStatus, says: String) {
        let check = DoctorChecks.tokenFile(path: "/run/credd/token", fact: fact, uid: 1000, group: nil)
        #expect(check.status == status)
        #expect(check.message.contains(says))
        if fact == .trailingNewline { #expect(check.fix?.contains("truncate -s -1") == true) }
    }

    @Test func configErrorsAndWarnings() {
        #expect(DoctorChecks.config(path: "/etc/credd/credd.yaml", error: nil, warnings: []).status == .pass)
        let bad = DoctorChecks.config(path: "/etc/credd/credd.yaml", error: "line 3: unknown key", warnings: [])
        #expect(bad.status == .fail)
        #expect(bad.fix?.contains("credd config check") == true)
    }
}

@Suite struct DoctorEnvironmentChecksTests {
    static let hint = "eval \"$(credd env)\""

    func fullURI(_ vars: [String: String], expectedSet: String? = nil) -> DoctorCheck {
        DoctorChecks.fullURI(env: env(vars), listeners: [tcp], sets: ["default", "dev"], expectedSet: expectedSet, exportHint: Self.hint)
    }

    @Test(arguments: [
        ("http://127.0.0.1:9702/v1/credentials", DoctorStatus.pass, "credd's set \"default\""),
        ("http://localhost:9702/v1/credentials/dev", .pass, "credd's set \"dev\""),
        ("http://127.0.0.1:9999/v1/credentials", .fail, "points at port 9999, but credd listens on 127.0.0.1:9702"),
        ("http://169.254.170.2/v1/credentials", .fail, "not loopback"),
        ("https://127.0.0.1:9702/v1/credentials", .fail, "uses https"),
        ("http://127.0.0.1:9702/creds", .fail, "has the path /creds"),
        ("http://127.0.0.1:9702/v1/credentials/nope", .fail, "names set \"nope\", which credd does not serve"),
        ("not a url", .fail, "is not a URL"),
    ])
    func fullURIValues(uri: String, status: DoctorStatus, says: String) {
        let check = fullURI(["AWS_CONTAINER_CREDENTIALS_FULL_URI": uri])
        #expect(check.status == status, "\(check.message)")
        #expect(check.message.contains(says), "\(check.message)")
    }

    @Test func fullURIUnsetOrRelative() {
        let unset = fullURI([:])
        #expect(unset.status == .fail)
        #expect(unset.fix?.contains("credd exec") == true)
        let relative = fullURI(["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"])
        #expect(relative.status == .fail)
        #expect(relative.message.contains("169.254.170.2"))
        let otherSet = fullURI(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9702/v1/credentials"], expectedSet: "dev")
        #expect(otherSet.status == .fail)
    }

    @Test func tokenVariables() {
        func check(_ vars: [String: String], fileMatches: Bool? = true, inlineMatches: Bool? = true) -> DoctorCheck {
            DoctorChecks.tokenVariables(
                env: env(vars), expectedFile: "/run/credd/token", fileMatches: fileMatches, inlineMatches: inlineMatches, exportHint: Self.hint)
        }
        #expect(check(["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/run/credd/token"]).status == .pass)
        let both = check(["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/run/credd/token", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "abc"])
        #expect(both.status == .fail)
        #expect(both.message.contains("SDKs disagree which wins"))
        #expect(both.fix?.contains("unset AWS_CONTAINER_AUTHORIZATION_TOKEN") == true)
        let neither = check([:])
        #expect(neither.status == .fail)
        #expect(neither.fix?.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/credd/token") == true)
        #expect(check(["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/tmp/other"], fileMatches: false).status == .fail)
        #expect(check(["AWS_CONTAINER_AUTHORIZATION_TOKEN": "abc"]).status == .pass)
        #expect(check(["AWS_CONTAINER_AUTHORIZATION_TOKEN": "abc"], inlineMatches: false).status == .fail)
    }

    @Test func secretValuesAreNotKept() {
        let e = env(["AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok", "HOME": "/x"])
        #expect(e.variables["AWS_SECRET_ACCESS_KEY"] == "<secret>")
        #expect(e.variables["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "<secret>")
        #expect(e.variables["HOME"] == nil)
        let p = profile(config: ["aws_secret_access_key": "wJalrXUtnFEMI", "credential_process": "x", "region": "eu-west-1"])
        #expect(p.config?["aws_secret_access_key"] == "")
        #expect(p.config?["credential_process"] == "x")
    }

    struct ConflictCase: Sendable, CustomTestStringConvertible {
        var env: [String: String]
        var profile: CallerProfileFacts
        var says: String?
        var testDescription: String { says ?? "nothing wins" }
    }

    @Test(arguments: [
        ConflictCase(env: [:], profile: profile(), says: nil),
        ConflictCase(env: ["AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"], profile: profile(), says: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set"),
        ConflictCase(env: ["AWS_PROFILE": "dev"], profile: profile("dev", credentialKeys: ["aws_access_key_id", "aws_secret_access_key"]), says: "profile dev has static keys in /home/u/.aws/credentials"),
        ConflictCase(env: [:], profile: profile(credentialKeys: ["aws_access_key_id"]), says: "profile default has static keys"),
        ConflictCase(env: [:], profile: profile(config: ["credential_process": "/usr/bin/vault-creds"]), says: "credential_process = /usr/bin/vault-creds"),
        ConflictCase(env: ["AWS_PROFILE": "gone"], profile: profile("gone"), says: "ProfileNotFound"),
        ConflictCase(env: [:], profile: profile(config: ["login_session": "arn:aws:iam::1:user/u"]), says: "login_session"),
        ConflictCase(env: [:], profile: profile(config: ["sso_session": "corp"]), says: "IAM Identity Center"),
        ConflictCase(env: [:], profile: profile(config: ["role_arn": "arn:aws:iam::1:role/r", "source_profile": "x"]), says: "assumes role"),
        ConflictCase(env: ["AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"], profile: profile(), says: "web identity"),
        ConflictCase(env: ["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2"], profile: profile(), says: "RELATIVE_URI"),
        ConflictCase(env: [:], profile: profile(problems: ["/home/u/.aws/config, line 2: expected `key = value`"]), says: "line 2"),
    ])
    func conflicts(_ c: ConflictCase) {
        let check = DoctorChecks.conflicts(env: env(c.env), profile: c.profile)
        if let says = c.says {
            #expect(check.status == .fail)
            #expect(check.message.contains(says), "\(check.message)")
            #expect(check.fix?.contains("credd exec") == true)
        } else {
            #expect(check.status == .pass)
        }
    }

    @Test func roleWithEcsContainerSourceAndCreddProcessAreFine() {
        #expect(DoctorChecks.conflicts(env: env([:]), profile: profile(config: ["role_arn": "arn:aws:iam::1:role/r", "credential_source": "EcsContainer"])).status == .pass)
        let viaCredd = DoctorChecks.conflicts(env: env([:]), profile: profile(config: ["credential_process": "credd get --format process"]))
        #expect(viaCredd.status == .pass)
        #expect(viaCredd.message.contains("credential_process"))
    }

    @Test func credentialsFileIsReadWithTheConfigSyntax() {
        let facts = CallerProfileFacts.read(
            profile: "dev", configFile: "/c", configText: "[profile dev]\nregion = eu-west-1\n", credentialsFile: "/k",
            credentialsText: "[default]\naws_access_key_id = A\n[dev]\naws_access_key_id = B\naws_secret_access_key = S\n")
        #expect(facts.credentialKeys == ["aws_access_key_id", "aws_secret_access_key"])
        #expect(facts.config?["region"] == "eu-west-1")
        let broken = CallerProfileFacts.read(profile: "default", configFile: "/c", configText: "region = x\n", credentialsFile: "/k", credentialsText: nil)
        #expect(broken.problems.count == 1)
    }

    @Test func sdkFetch() {
        let url = "http://127.0.0.1:9702/v1/credentials"
        let ok = HTTPAnswer(status: 200, credentials: CredentialsSummary(keySuffix: "WXYZ", expiration: now.addingTimeInterval(3600)))
        let pass = DoctorChecks.sdkFetch(url: url, probe: .answered(ok), now: now)
        #expect(pass.status == .pass)
        #expect(pass.message.contains("…WXYZ"))
        #expect(pass.message.contains("1h00m"))
        let missing = HTTPAnswer(status: 200, credentials: CredentialsSummary(keySuffix: "WXYZ", expiration: nil, missingFields: ["Token"]))
        #expect(DoctorChecks.sdkFetch(url: url, probe: .answered(missing), now: now).status == .fail)
        let wrong = DoctorChecks.sdkFetch(url: url, probe: .answered(HTTPAnswer(status: 403, errorCode: "WrongToken", errorMessage: "the Authorization token is not the one")), now: now)
        #expect(wrong.status == .fail)
        #expect(wrong.message.contains("WrongToken"))
        #expect(DoctorChecks.sdkFetch(url: url, probe: .timedOut, now: now).status == .fail)
        #expect(DoctorChecks.sdkFetch(url: nil, probe: nil, now: now).status == .skip)
    }
}

@Suite struct DoctorSourceChecksTests {
    func ok(_ status: Int = 200, date: Date? = nil) -> HTTPProbe { .answered(HTTPAnswer(status: status, date: date)) }

    func imds(_ f: IMDSFacts) -> [String: DoctorCheck] {
        Dictionary(uniqueKeysWithValues: DoctorChecks.imds(f, now: now).map { ($0.id, $0) })
    }

    var healthy: IMDSFacts {
        IMDSFacts(
            endpoint: "http://127.0.0.1:1", connect: .connected, tokenPut: ok(), roleList: ok(), roleName: "web", credentials: ok(),
            document: .success(CredentialsSummary(keySuffix: "ABCD", expiration: now.addingTimeInterval(6 * 3600))))
    }

    @Test func imdsAllPass() {
        let checks = imds(healthy)
        #expect(checks.values.allSatisfy { $0.status == .pass })
        #expect(checks["imds.role"]?.message.contains("web") == true)
        #expect(checks["imds.credentials"]?.message.contains("…ABCD") == true)
    }

    @Test func imdsNotUsedOrDisabledIsSkipped() {
        #expect(DoctorChecks.imds(nil, now: now).allSatisfy { $0.status == .skip && $0.message.contains("no credential set uses IMDS") })
        var f = healthy
        f.disabled = true
        #expect(DoctorChecks.imds(f, now: now).allSatisfy { $0.status == .skip && $0.message.contains("AWS_EC2_METADATA_DISABLED") })
    }

    @Test(arguments: [ConnectProbe.refused, .timedOut, .failed("no route")])
    func imdsUnreachable(_ probe: ConnectProbe) {
        var f = healthy
        f.connect = probe
        let checks = imds(f)
        #expect(checks["imds.reachable"]?.status == .fail)
        #expect(checks["imds.token"]?.status == .skip)
        #expect(checks["imds.credentials"]?.status == .skip)
    }

    @Test func tokenPutTimingOutAfterConnectingIsTheHopLimit() {
        var f = healthy
        f.tokenPut = .timedOut
        let check = imds(f)["imds.token"]
        #expect(check?.status == .fail)
        #expect(check?.message.contains("response hop limit") == true)
        #expect(check?.fix?.contains("--http-put-response-hop-limit 2") == true)
        #expect(imds(f)["imds.role"]?.status == .skip)
    }

    @Test func tokenPutRefusals() {
        var f = healthy
        f.tokenPut = ok(403)
        #expect(imds(f)["imds.token"]?.message.contains("403") == true)
        f.tokenPut = ok(405)
        #expect(imds(f)["imds.token"]?.status == .fail)
        f.allowV1 = true
        #expect(imds(f)["imds.token"]?.status == .pass)
    }

    @Test func noRoleAttached() {
        var f = healthy
        f.roleList = ok(404)
        f.roleName = nil
        let checks = imds(f)
        #expect(checks["imds.role"]?.status == .fail)
        #expect(checks["imds.role"]?.message.contains("no IAM role is attached") == true)
        #expect(checks["imds.credentials"]?.status == .skip)
        f.roleList = ok()
        f.roleName = "other"
        f.configuredRole = "web"
        #expect(imds(f)["imds.role"]?.message.contains("imds.role is web") == true)
    }

    @Test func badCredentials() {
        var f = healthy
        f.document = .failure(SourceError(code: "IMDSCredentialsError", message: "IMDS returned Code AssumeRoleUnauthorizedAccess."))
        #expect(imds(f)["imds.credentials"]?.message.contains("AssumeRoleUnauthorizedAccess") == true)
        f.document = .success(CredentialsSummary(keySuffix: "ABCD", expiration: now.addingTimeInterval(-5)))
        #expect(imds(f)["imds.credentials"]?.status == .fail)
        f.credentials = ok(404)
        #expect(imds(f)["imds.credentials"]?.message.contains("404") == true)
    }

    var location: LoginCacheLocation {
        LoginCacheLocation(
            profile: "default", configFile: "/h/.aws/config", loginSession: "arn:aws:iam::1:user/u", region: "eu-west-1",
            cacheDirectory: "/h/.aws/login/cache", cacheFile: "/h/.aws/login/cache/abc.json")
    }

    func login(_ f: LoginFacts?, caller: CallerProfileFacts = profile()) -> [String: DoctorCheck] {
        Dictionary(uniqueKeysWithValues: DoctorChecks.login(f.map { [$0] } ?? [], callerProfile: caller, now: now).map { ($0.id, $0) })
    }

    @Test func loginHealthy() {
        let checks = login(LoginFacts(
            setName: "dev", profile: "default", location: location, cache: .valid(expiresAt: now.addingTimeInterval(600)),
            directoryWritable: true, fileWritable: true))
        #expect(checks.values.allSatisfy { $0.status == .pass })
        #expect(checks["login.clients"]?.message.contains("need no awscrt") == true)
    }

    @Test func loginNotConfiguredIsSkipped() {
        let checks = login(nil)
        #expect(checks.values.allSatisfy { $0.status == .skip })
        #expect(checks["login.session"]?.message.contains("no credential set uses aws login") == true)
    }

    @Test func loginFailures() {
        let required = SourceError(code: "LoginRequired", message: "login required: run `aws login --profile default`", disposition: .needsAction)
        var checks = login(LoginFacts(setName: "dev", profile: "default", locateError: required))
        #expect(checks["login.session"]?.status == .fail)
        #expect(checks["login.refresh"]?.status == .skip)
        checks = login(LoginFacts(setName: "dev", profile: "default", location: location, cache: .missing))
        #expect(checks["login.session"]?.message.contains("does not exist") == true)
        let invalid = SourceError(code: "LoginCacheInvalid", message: "the field dpopKey is not a usable P-256 private key", disposition: .needsAction)
        checks = login(LoginFacts(setName: "dev", profile: "default", location: location, cache: .invalid(invalid)))
        #expect(checks["login.session"]?.message.contains("dpopKey") == true)
        checks = login(LoginFacts(
            setName: "dev", profile: "default", location: location, cache: .valid(expiresAt: now), directoryWritable: false, fileWritable: true))
        #expect(checks["login.cache_writable"]?.status == .fail)
        let status = makeSetStatus(
            name: "dev", source: "login", state: .actionRequired, lastError: "Sign-In refused the refresh token: run `aws login` again.",
            lastErrorCode: "LoginRefreshRejected")
        checks = login(LoginFacts(
            setName: "dev", profile: "default", location: location, cache: .valid(expiresAt: now), directoryWritable: true,
            fileWritable: true, status: status))
        #expect(checks["login.refresh"]?.status == .fail)
        #expect(checks["login.refresh"]?.fix?.contains("aws login") == true)
    }

    @Test func seed001ProfileWithLoginSessionNeedsAwscrt() {
        let checks = login(nil, caller: profile(config: ["login_session": "arn:aws:iam::1:user/u"]))
        #expect(checks["login.clients"]?.status == .fail)
        #expect(checks["login.clients"]?.message.contains("awscrt ≥ 0.30") == true)
    }

    @Test func seed002LegacySTSEndpoints() {
        #expect(DoctorChecks.stsRegional(env: env([:]), profile: profile(), configWarnings: []).status == .pass)
        let viaEnv = DoctorChecks.stsRegional(env: env(["AWS_STS_REGIONAL_ENDPOINTS": "legacy"]), profile: profile(), configWarnings: [])
        #expect(viaEnv.status == .fail)
        #expect(viaEnv.message.contains("AuthFailure"))
        #expect(viaEnv.message.contains("version 1"))
        let viaConfig = DoctorChecks.stsRegional(env: env([:]), profile: profile(config: ["sts_regional_endpoints": "legacy"]), configWarnings: [])
        #expect(viaConfig.status == .fail)
        #expect(viaConfig.message.contains("/home/u/.aws/config"))
        #expect(DoctorChecks.stsRegional(env: env(["AWS_STS_REGIONAL_ENDPOINTS": "regional"]), profile: profile(), configWarnings: []).status == .pass)
    }

    @Test(arguments: [(0.0, DoctorStatus.pass), (12, .pass), (-29, .pass), (45, .fail), (-600, .fail)])
    func clockSkew(offset: TimeInterval, status: DoctorStatus) {
        let sample = ClockSample(upstream: "IMDS at http://127.0.0.1:1", upstreamDate: now, localDate: now.addingTimeInterval(offset))
        let check = DoctorChecks.clock([sample])
        #expect(check.status == status)
        if status == .fail { #expect(check.message.contains(offset > 0 ? "ahead of" : "behind")) }
    }

    @Test func clockWithoutUpstreamIsSkipped() {
        #expect(DoctorChecks.clock([]).status == .skip)
    }

    @Test func setStates() {
        func s(_ state: SetState) -> SetStatus {
            makeSetStatus(name: "default", source: "imds", state: state, lastError: "IMDS unreachable at http://x; credd retries.", lastErrorCode: "IMDSUnreachable")
        }
        #expect(DoctorChecks.sets([s(.fresh)], only: nil, now: now).first?.status == .pass)
        #expect(DoctorChecks.sets([s(.failing)], only: nil, now: now).first?.status == .fail)
        #expect(DoctorChecks.sets([s(.actionRequired)], only: nil, now: now).first?.fix?.contains("credd retries") == true)
        #expect(DoctorChecks.sets([s(.staticStability)], only: nil, now: now).first?.status == .fail)
        #expect(DoctorChecks.sets([s(.fresh)], only: "other", now: now).isEmpty)
        #expect(DoctorChecks.sets(nil, only: nil, now: now).first?.status == .skip)
    }
}

@Suite struct DoctorReportTests {
    @Test func exitStatusFollowsFailuresNotSkips() {
        let passing = DoctorReport(config: "/c", set: nil, checks: [
            DoctorCheck(id: "a", group: .credd, status: .pass, message: "fine"),
            DoctorCheck(id: "b", group: .login, status: .skip, message: "n/a"),
        ])
        #expect(passing.ok)
        #expect(passing.text().contains("✓ fine"))
        #expect(passing.text().contains("– n/a"))
        let failing = DoctorReport(config: "/c", set: "dev", checks: [
            DoctorCheck(id: "a", group: .credd, status: .fail, message: "broken", fix: "mend it"),
        ])
        #expect(!failing.ok)
        #expect(failing.text().contains("✗ broken\n      fix: mend it"))
        let json = try? JSONSerialization.jsonObject(with: failing.jsonData()) as? [String: Any]
        #expect(json?["version"] as? Int == 1)
        #expect(json?["ok"] as? Bool == false)
        #expect((json?["checks"] as? [[String: Any]])?.first?["status"] as? String == "fail")
    }

    @Test func parseFullURI() {
        #expect(DoctorChecks.parseFullURI("http://[::1]:9702/v1/credentials/x") == DoctorChecks.FullURI(host: "::1", port: 9702, set: "x"))
        #expect(DoctorChecks.parseFullURI("http://127.0.0.1:9702/v1/credentials").set == "default")
    }
}
