// Which STS endpoint a set uses: regional by default, overrides, and the global one only when allowed.
import CreddCore
import Foundation
import Testing

@Suite("AssumeRole STS endpoint")
struct AssumeRoleEndpointTests {
    func resolve(
        region: String = "eu-west-1", endpoint: String? = nil, allowGlobal: Bool = false, environment: [String: String] = [:]
    ) -> Result<STSEndpoint, STSEndpointError> {
        STSEndpoint.resolve(
            setName: "deploy", region: region, endpoint: endpoint, allowGlobalEndpoint: allowGlobal, environment: environment)
    }

    @Test(
        "regional by default",
        arguments: [
            ("eu-west-1", "https://sts.eu-west-1.amazonaws.com", "sts.eu-west-1.amazonaws.com"),
            ("us-east-1", "https://sts.us-east-1.amazonaws.com", "sts.us-east-1.amazonaws.com"),
            ("me-south-1", "https://sts.me-south-1.amazonaws.com", "sts.me-south-1.amazonaws.com"),
            ("cn-north-1", "https://sts.cn-north-1.amazonaws.com.cn", "sts.cn-north-1.amazonaws.com.cn"),
        ])
    func regional(region: String, url: String, host: String) throws {
        let endpoint = try resolve(region: region).get()
        #expect(endpoint.url.absoluteString == url)
        #expect(endpoint.hostHeader == host)
        #expect(endpoint.signingRegion == region)
        #expect(!endpoint.isGlobal)
        #expect(endpoint.warnings.isEmpty)
    }

    @Test("the config's endpoint wins over AWS_ENDPOINT_URL_STS, which wins over the regional default")
    func overrides() throws {
        let env = ["AWS_ENDPOINT_URL_STS": "http://127.0.0.1:4566"]
        #expect(try resolve(environment: env).get().url.absoluteString == "http://127.0.0.1:4566")
        #expect(try resolve(environment: env).get().hostHeader == "127.0.0.1:4566")
        #expect(try resolve(environment: env).get().signingRegion == "eu-west-1")
        let configured = try resolve(endpoint: "https://sts-fips.eu-west-1.amazonaws.com", environment: env).get()
        #expect(configured.url.absoluteString == "https://sts-fips.eu-west-1.amazonaws.com")
        #expect(try resolve(endpoint: "", environment: env).get().url.absoluteString == "http://127.0.0.1:4566")
        #expect(try resolve(environment: ["AWS_ENDPOINT_URL_STS": ""]).get().url.absoluteString == "https://sts.eu-west-1.amazonaws.com")
    }

    @Test(
        "Host header: default ports dropped, other ports kept, IPv6 in brackets",
        arguments: [
            ("https://sts.example.com:443", "sts.example.com"),
            ("https://sts.example.com:8443", "sts.example.com:8443"),
            ("http://localhost:80", "localhost"),
            ("http://[::1]:5000", "[::1]:5000"),
            ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
        ])
    func hostHeader(endpoint: String, host: String) throws {
        let resolved = try resolve(endpoint: endpoint).get()
        #expect(resolved.hostHeader == host)
    }

    @Test(
        "the global endpoint is refused without the explicit flag, from the config or the environment",
        arguments: [("https://sts.amazonaws.com", [String: String]()), (nil, ["AWS_ENDPOINT_URL_STS": "https://STS.amazonaws.com/"])])
    func globalRefused(endpoint: String?, environment: [String: String]) {
        guard case .failure(let error) = resolve(endpoint: endpoint, environment: environment) else {
            Issue.record("the global endpoint was accepted without allow_global_endpoint")
            return
        }
        #expect(error.message.contains("version 1"))
        #expect(error.message.contains("opt-in regions"))
        #expect(error.message.contains("https://sts.eu-west-1.amazonaws.com"))
        #expect(error.message.contains("credentials.deploy.allow_global_endpoint: true"))
        let validation = STSEndpoint.validationMessage(
            setName: "deploy", region: "eu-west-1", endpoint: endpoint, allowGlobalEndpoint: false, environment: environment)
        #expect(validation == error.message)
    }

    @Test("the global endpoint with the flag: used, signed for us-east-1, with a warning about version 1 tokens")
    func globalAllowed() throws {
        let endpoint = try resolve(endpoint: "https://sts.amazonaws.com", allowGlobal: true).get()
        #expect(endpoint.isGlobal)
        #expect(endpoint.signingRegion == "us-east-1")
        #expect(endpoint.url.absoluteString == "https://sts.amazonaws.com")
        #expect(endpoint.warnings.count == 1)
        let warning = try #require(endpoint.warnings.first)
        #expect(warning.contains("version 1"))
        #expect(warning.contains("AuthFailure"))
        #expect(warning.contains("https://sts.eu-west-1.amazonaws.com"))
    }

    @Test(
        "unusable settings are refused with a message naming where they came from",
        arguments: [
            ("eu-west-1", "sts.eu-west-1.amazonaws.com", "not an http(s) URL"),
            ("eu-west-1", "ftp://sts.example.com", "not an http(s) URL"),
            ("eu-west-1", "http://sts.example.com", "plain http"),
            ("eu-west-1", "https://sts.example.com/path", "remove the path"),
            ("eu-west-1", "https://sts.example.com/?x=1", "remove the path"),
            ("aws-global", nil, "aws-global"),
            ("EU-WEST-1", nil, "not an AWS region name"),
            ("eu west 1", nil, "not an AWS region name"),
            ("", nil, "no region"),
        ] as [(String, String?, String)])
    func refused(region: String, endpoint: String?, says: String) {
        let message = STSEndpoint.validationMessage(
            setName: "deploy", region: region, endpoint: endpoint, allowGlobalEndpoint: false, environment: [:])
        #expect(message?.contains(says) == true, "\(message ?? "nil")")
        #expect(message?.contains("credentials.deploy") == true)
    }

    @Test("a missing region is named as such")
    func missingRegion() {
        let message = STSEndpoint.validationMessage(
            setName: "deploy", region: nil, endpoint: nil, allowGlobalEndpoint: false, environment: [:])
        #expect(message?.hasPrefix("credentials.deploy (source assume-role) has no region") == true)
    }

    @Test("valid settings validate to nil")
    func validatesToNil() {
        #expect(STSEndpoint.validationMessage(setName: "d", region: "eu-west-1", endpoint: nil, allowGlobalEndpoint: false, environment: [:]) == nil)
        #expect(STSEndpoint.validationMessage(setName: "d", region: "eu-west-1", endpoint: "http://[::1]:1", allowGlobalEndpoint: false, environment: [:]) == nil)
        #expect(STSEndpoint.validationMessage(setName: "d", region: "us-east-1", endpoint: "https://sts.amazonaws.com", allowGlobalEndpoint: true, environment: [:]) == nil)
    }
}
