// The Sign-In endpoint rules, the overrides, and how every Sign-In answer maps to a grant or an error.
import CreddCore
import Foundation
import Testing

@Suite("aws login: Sign-In endpoint and answers")
struct LoginSignInTests {
    /// Expected URLs recorded from botocore 1.43.11's resolver (create_o_auth2_token with a before-send
    /// hook capturing request.url), so the table is botocore's answer, not ours.
    @Test(
        "regional endpoints follow the service's endpoint rules (botocore's answers)",
        arguments: [
            ("us-east-1", "https://us-east-1.signin.aws.amazon.com/v1/token"),
            ("eu-west-1", "https://eu-west-1.signin.aws.amazon.com/v1/token"),
            ("ap-southeast-5", "https://ap-southeast-5.signin.aws.amazon.com/v1/token"),
            ("me-south-1", "https://me-south-1.signin.aws.amazon.com/v1/token"),
            ("mx-central-1", "https://mx-central-1.signin.aws.amazon.com/v1/token"),
            ("cn-north-1", "https://cn-north-1.signin.amazonaws.cn/v1/token"),
            ("cn-northwest-1", "https://cn-northwest-1.signin.amazonaws.cn/v1/token"),
            ("us-gov-west-1", "https://us-gov-west-1.signin.amazonaws-us-gov.com/v1/token"),
            ("us-gov-east-1", "https://us-gov-east-1.signin.amazonaws-us-gov.com/v1/token"),
            ("us-iso-east-1", "https://signin.us-iso-east-1.c2s.ic.gov/v1/token"),
            ("us-isob-east-1", "https://signin.us-isob-east-1.sc2s.sgov.gov/v1/token"),
            ("eu-isoe-west-1", "https://signin.eu-isoe-west-1.cloud.adc-e.uk/v1/token"),
            ("us-isof-south-1", "https://signin.us-isof-south-1.csp.hci.ic.gov/v1/token"),
            ("eusc-de-east-1", "https://signin.eusc-de-east-1.amazonaws.eu/v1/token"),
            ("xx-foo-1", "https://xx-foo-1.signin.aws.amazon.com/v1/token"),
            ("local", "https://local.signin.aws.amazon.com/v1/token"),
            ("aws-global", "https://aws-global.signin.aws.amazon.com/v1/token"),
        ])
    func regional(region: String, expected: String) throws {
        let base = try SignInEndpoint.resolve(region: region, override: nil, environment: [:], profile: "p")
        #expect(SignInEndpoint.tokenURL(base: base) == expected)
    }

    @Test("partitions", arguments: [
        ("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"), ("aws-cn-global", "aws-cn"),
        ("aws-us-gov-global", "aws-us-gov"), ("us-isob-east-1", "aws-iso-b"), ("nowhere", "aws"),
    ])
    func partitions(region: String, partition: String) {
        #expect(SignInEndpoint.partition(of: region) == partition)
    }

    @Test(
        "overrides: credd's config, then AWS_ENDPOINT_URL_SIGNIN, then AWS_ENDPOINT_URL; trailing / dropped",
        arguments: [
            ("http://127.0.0.1:9000/", ["AWS_ENDPOINT_URL_SIGNIN": "https://a.example"], "http://127.0.0.1:9000"),
            (nil, ["AWS_ENDPOINT_URL_SIGNIN": "https://a.example/", "AWS_ENDPOINT_URL": "https://b.example"],
             "https://a.example"),
            (nil, ["AWS_ENDPOINT_URL": "https://b.example/prefix"], "https://b.example/prefix"),
            (nil, ["AWS_ENDPOINT_URL_SIGNIN": "http://[::1]:8080"], "http://[::1]:8080"),
            (nil, ["AWS_ENDPOINT_URL_SIGNIN": "http://localhost:8080"], "http://localhost:8080"),
            (nil, ["AWS_ENDPOINT_URL_SIGNIN": "https://a.example", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"],
             "https://eu-west-1.signin.aws.amazon.com"),
        ] as [(String?, [String: String], String)])
    func overrides(override: String?, environment: [String: String], expected: String) throws {
        let base = try SignInEndpoint.resolve(region: "eu-west-1", override: override, environment: environment, profile: "p")
        #expect(base == expected)
    }

    @Test(
        "a refresh token never goes in clear text off the machine, nor to a malformed URL",
        arguments: ["http://signin.example.com", "http://10.0.0.1:80", "ftp://127.0.0.1", "127.0.0.1:9000",
                    "https://user:pw@a.example", "https://a.example/?q=1", "http://127.0.0.1.example.com"])
    func refusedOverrides(url: String) {
        #expect {
            try SignInEndpoint.resolve(region: "us-east-1", override: url, environment: [:], profile: "p")
        } throws: { error in
            (error as? SourceError)?.code == "LoginConfigInvalid" && (error as? SourceError)?.message.contains(url) == true
        }
    }

    @Test("no region and no override: an error that says to add the region", arguments: [nil, ""] as [String?])
    func noRegion(region: String?) {
        #expect {
            try SignInEndpoint.resolve(region: region, override: nil, environment: [:], profile: "dev")
        } throws: { error in
            let e = error as? SourceError
            return e?.code == "LoginConfigInvalid" && e?.message.contains("Profile dev names no region") == true
        }
    }

    @Test("a region that is not a host label is refused", arguments: ["us-east-1.evil.com/x", "US-EAST-1", "-x", "a b"])
    func badRegion(region: String) {
        #expect(throws: SourceError.self) {
            try SignInEndpoint.resolve(region: region, override: nil, environment: [:], profile: "p")
        }
    }

    // MARK: answers

    static let url = "https://us-east-1.signin.aws.amazon.com/v1/token"
    static let refreshToken = Secret("rt-secret-value-that-must-never-be-shown-0123456789")

    static func interpret(_ status: Int, _ body: String) -> Result<SignInGrant, SourceError> {
        SignInClient.interpret(status: status, body: Data(body.utf8), url: url, profile: "dev", refreshToken: refreshToken)
    }

    @Test("a 200 token answer becomes a grant")
    func grant() throws {
        let body = #"""
            {"accessToken":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s3cr3t","sessionToken":"tok"},
             "tokenType":"aws_sigv4","expiresIn":900,"refreshToken":"rt-new"}
            """#
        let grant = try Self.interpret(200, body).get()
        #expect(grant.accessKeyId == "ASIAEXAMPLE")
        #expect(grant.secretAccessKey.exposed == "s3cr3t")
        #expect(grant.sessionToken.exposed == "tok")
        #expect(grant.expiresIn == 900)
        #expect(grant.refreshToken.exposed == "rt-new")
        #expect(!"\(grant)".contains("s3cr3t") && !"\(grant)".contains("rt-new") && !"\(grant)".contains("tok\""))
    }

    @Test(
        "answers map to the documented codes and dispositions",
        arguments: [
            (401, #"{"error":"TOKEN_EXPIRED","message":"Token expired"}"#, "LoginRequired", true, "session has expired"),
            (403, #"{"error":"USER_CREDENTIALS_CHANGED","message":"changed"}"#, "LoginRequired", true, "credentials changed"),
            (401, #"{"error":"AUTHCODE_EXPIRED","message":"x"}"#, "LoginRequired", true, "AUTHCODE_EXPIRED"),
            (403, #"{"error":"INSUFFICIENT_PERMISSIONS","message":"no"}"#, "LoginInsufficientPermissions", true,
             "signin:CreateOAuth2Token"),
            (400, #"{"error":"INVALID_REQUEST","message":"Invalid DPoP proof: iat"}"#, "LoginRefreshRejected", true,
             "Invalid DPoP proof: iat"),
            (404, "<html>not found</html>", "LoginRefreshRejected", true, "HTTP 404"),
            (429, #"{"error":"INVALID_REQUEST","message":"slow down"}"#, "SignInThrottled", false, "slow down"),
            (500, #"{"error":"server_error","message":"boom"}"#, "SignInUnavailable", false, "HTTP 500 server_error: boom"),
            (503, "<html>Service Unavailable</html>", "SignInUnavailable", false, "HTTP 503"),
            (200, "{\"accessToken\": not json", "SignInInvalidResponse", false, "not the expected JSON"),
            (200, #"{"tokenType":"aws_sigv4"}"#, "SignInInvalidResponse", false, "accessToken is missing"),
            (200, #"{"accessToken":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t"},"expiresIn":true,"refreshToken":"r"}"#,
             "SignInInvalidResponse", false, "expiresIn"),
            (200, #"{"accessToken":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t"},"expiresIn":1.5,"refreshToken":"r"}"#,
             "SignInInvalidResponse", false, "expiresIn"),
            (200, #"{"accessToken":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t"},"expiresIn":0,"refreshToken":"r"}"#,
             "SignInInvalidResponse", false, "expiresIn"),
            (200, #"{"accessToken":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t"},"expiresIn":900}"#,
             "SignInInvalidResponse", false, "refreshToken is missing"),
            (200, #"{"accessToken":{"accessKeyId":"A","secretAccessKey":"","sessionToken":"t"},"expiresIn":900,"refreshToken":"r"}"#,
             "SignInInvalidResponse", false, "secretAccessKey"),
        ] as [(Int, String, String, Bool, String)])
    func errors(status: Int, body: String, code: String, needsAction: Bool, fragment: String) {
        guard case .failure(let error) = Self.interpret(status, body) else {
            Issue.record("expected an error for \(status) \(body)")
            return
        }
        #expect(error.code == code)
        #expect(error.disposition == (needsAction ? .needsAction : .transient))
        #expect(error.message.contains(fragment), "\(error.message)")
        #expect(error.message.contains(Self.url))
        if code == "LoginRequired" {
            #expect(error.message.hasPrefix("login required: run `aws login --profile dev`"))
        }
    }

    @Test("the service's message is shown, but never the refresh token and never control characters")
    func sanitizedMessage() throws {
        let body = #"{"error":"INVALID_REQUEST","message":"bad token rt-secret-value-that-must-never-be-shown-0123456789\n\u001b[31mred"}"#
        guard case .failure(let error) = Self.interpret(400, body) else {
            Issue.record("expected an error")
            return
        }
        #expect(!error.message.contains(Self.refreshToken.exposed))
        #expect(error.message.contains("<redacted>"))
        #expect(!error.message.contains("\n") && !error.message.contains("\u{1b}"))
    }
}
