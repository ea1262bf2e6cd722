// The AWS config reader and how a login source finds its session and cache file.
import CreddCore
import Foundation
import Testing

@Suite("aws login: AWS config file and cache location")
struct LoginConfigTests {
    @Test("profiles, keys and values as botocore reads them")
    func readsProfiles() throws {
        let text = """
            # a comment
            ; another comment
            [default]
            region = eu-west-1
            login_session = arn:aws:iam::123456789012:user/alice

            [profile dev]
            Login_Session=arn:aws:iam::123456789012:user/bob
            region: ap-southeast-2
            s3 =
              max_concurrent_requests = 20
              addressing_style = path
            output = json # not a comment in botocore

            [sso-session corp]
            sso_region = us-east-1

            [profile  spaced ]
            region = us-west-2\r
            """
        let profiles = try AWSConfigProfiles.parse(text, file: "/home/u/.aws/config")
        #expect(profiles["default"]?["region"] == "eu-west-1")
        #expect(profiles["default"]?["login_session"] == "arn:aws:iam::123456789012:user/alice")
        #expect(profiles["dev"]?["login_session"] == "arn:aws:iam::123456789012:user/bob")
        #expect(profiles["dev"]?["region"] == "ap-southeast-2")
        #expect(profiles["dev"]?["s3"] == "")
        #expect(profiles["dev"]?["max_concurrent_requests"] == nil)
        #expect(profiles["dev"]?["output"] == "json # not a comment in botocore")
        #expect(profiles["spaced"]?["region"] == "us-west-2")
        #expect(profiles["corp"] == nil)
        #expect(profiles.profiles.count == 3)
    }

    @Test("[profile default] and [default]: the later section wins, as in botocore")
    func laterDefaultWins() throws {
        let profiles = try AWSConfigProfiles.parse(
            "[default]\nregion = a\nlogin_session = s\n[profile default]\nregion = b\n", file: "f")
        #expect(profiles["default"] == ["region": "b"])
    }

    @Test(
        "syntax errors name the file and the line",
        arguments: [
            ("region = us-east-1\n", 1, "before any [section]"),
            ("[default\nregion = x\n", 1, "must end with ']'"),
            ("[default]\nnot a setting\n", 2, "expected `key = value`"),
            ("[default]\n  indented = first\n", 2, "continues no key"),
            ("[default]\nregion = a\nregion = b\n", 3, "appears twice"),
            ("[default]\n[default]\n", 2, "appears twice"),
            ("[]\n", 1, "empty"),
            ("[profile ]\n", 1, "needs a profile name"),
            ("[default]\n= value\n", 2, "key before"),
        ] as [(String, Int, String)])
    func syntaxErrors(text: String, line: Int, problem: String) {
        #expect {
            try AWSConfigProfiles.parse(text, file: "/h/.aws/config")
        } throws: { error in
            guard let e = error as? AWSConfigProfiles.ParseError else { return false }
            return e.line == line && e.problem.contains(problem) && e.description.hasPrefix("/h/.aws/config, line \(line): ")
        }
    }

    // MARK: locate

    static func home() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("credd-login-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(".aws"), withIntermediateDirectories: true)
        return dir.path
    }

    @Test("locate: login_session and region from ~/.aws/config; the cache file is sha256(login_session).json")
    func locateDefaults() throws {
        let home = try Self.home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let session = "arn:aws:iam::123456789012:user/alice"
        try "[profile dev]\nlogin_session = \(session)\nregion = eu-central-1\n"
            .write(toFile: home + "/.aws/config", atomically: true, encoding: .utf8)
        let location = try LoginCacheLocation.locate(profile: "dev", environment: [:], homeDirectory: home)
        #expect(location.loginSession == session)
        #expect(location.region == "eu-central-1")
        #expect(location.configFile == home + "/.aws/config")
        #expect(location.cacheDirectory == home + "/.aws/login/cache")
        // python3 -c 'import hashlib;print(hashlib.sha256(b"arn:aws:iam::123456789012:user/alice").hexdigest())'
        #expect(location.cacheFile == home + "/.aws/login/cache/b7d71d383b9557a9bad4c3346c50365819226484c6824a0fdef66637be339db0.json")
        #expect(LoginCacheLocation.cacheFileName(loginSession: "abc")
            == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.json")
        #expect(location.lockFile == location.cacheFile + ".lock")
    }

    @Test("locate: AWS_CONFIG_FILE and AWS_LOGIN_CACHE_DIRECTORY (with ~) are honoured; region falls back to AWS_REGION")
    func locateEnvironment() throws {
        let home = try Self.home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        try "[default]\nlogin_session = s\n".write(toFile: home + "/elsewhere", atomically: true, encoding: .utf8)
        let env = [
            "AWS_CONFIG_FILE": "~/elsewhere", "AWS_LOGIN_CACHE_DIRECTORY": "~/cache-dir", "AWS_REGION": "us-west-2",
            "AWS_DEFAULT_REGION": "eu-west-3",
        ]
        let location = try LoginCacheLocation.locate(profile: "default", environment: env, homeDirectory: home)
        #expect(location.configFile == home + "/elsewhere")
        #expect(location.cacheDirectory == home + "/cache-dir")
        #expect(location.region == "us-west-2")
        let withoutRegion = try LoginCacheLocation.locate(
            profile: "default", environment: ["AWS_CONFIG_FILE": home + "/elsewhere"], homeDirectory: home)
        #expect(withoutRegion.region == nil)
    }

    @Test(
        "locate: what is missing is said, with the command to run",
        arguments: [
            (nil, "dev", "LoginRequired", "no AWS config file at"),
            ("[profile other]\nlogin_session = s\n", "dev", "LoginRequired", "profile dev is not in"),
            ("[profile dev]\nregion = us-east-1\n", "dev", "LoginRequired", "has no login_session"),
            ("[profile dev]\nlogin_session\n", "dev", "LoginConfigInvalid", "line 2"),
        ] as [(String?, String, String, String)])
    func locateErrors(config: String?, profile: String, code: String, fragment: String) throws {
        let home = try Self.home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        if let config { try config.write(toFile: home + "/.aws/config", atomically: true, encoding: .utf8) }
        #expect {
            try LoginCacheLocation.locate(profile: profile, environment: [:], homeDirectory: home)
        } throws: { error in
            guard let e = error as? SourceError else { return false }
            return e.code == code && e.disposition == .needsAction && e.message.contains(fragment)
                && e.message.contains(home + "/.aws/config")
                && (code != "LoginRequired" || e.message.hasPrefix("login required: run `aws login --profile dev`"))
        }
    }
}

@Suite("aws login: the default profile of a user instance")
struct LoginDefaultProfileTests {
    @Test("AWS_PROFILE, else default; a profile with login_session is detected")
    func defaults() throws {
        #expect(LoginCacheLocation.defaultProfile(environment: [:]) == "default")
        #expect(LoginCacheLocation.defaultProfile(environment: ["AWS_PROFILE": "dev"]) == "dev")
        #expect(LoginCacheLocation.defaultProfile(environment: ["AWS_PROFILE": ""]) == "default")
        let home = try LoginConfigTests.home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(!LoginCacheLocation.profileHasLoginSession(profile: "default", environment: [:], homeDirectory: home))
        try "[default]\nregion = us-east-1\n[profile dev]\nlogin_session = arn:aws:iam::1:user/x\n"
            .write(toFile: home + "/.aws/config", atomically: true, encoding: .utf8)
        #expect(!LoginCacheLocation.profileHasLoginSession(profile: "default", environment: [:], homeDirectory: home))
        #expect(LoginCacheLocation.profileHasLoginSession(profile: "dev", environment: [:], homeDirectory: home))
    }
}
