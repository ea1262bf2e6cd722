// Which STS endpoint a set talks to: regional by default, an override, or the global one only on request.
import Foundation

/// A resolved STS endpoint: where to POST and which region to sign for.
public struct STSEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// Scheme, host and optional port; requests go to its root path.
    public var url: URL
    /// The region in the SigV4 scope (`us-east-1` for the global endpoint).
    public var signingRegion: String
    /// True for `sts.amazonaws.com`, which issues version 1 session tokens.
    public var isGlobal: Bool
    /// Things to log once at start-up (the global endpoint's version-1 token warning).
    public var warnings: [String]

    public var description: String { url.absoluteString }

    /// `Host` header value: the host, plus the port when it is not the scheme's default; IPv6 in brackets.
    public var hostHeader: String {
        let host = url.host ?? ""
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        guard let port = url.port else { return bracketed }
        let defaultPort = url.scheme?.lowercased() == "https" ? 443 : 80
        return port == defaultPort ? bracketed : "\(bracketed):\(port)"
    }

    public static let globalHost = "sts.amazonaws.com"

    /// `https://sts.{region}.amazonaws.com` (`.amazonaws.com.cn` in the China regions).
    public static func regional(region: String) -> STSEndpoint {
        let suffix = region.hasPrefix("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
        return STSEndpoint(
            url: URL(string: "https://sts.\(region).\(suffix)")!, signingRegion: region, isGlobal: false, warnings: [])
    }

    /// Chooses the endpoint for a set: `endpoint` from the config, else `AWS_ENDPOINT_URL_STS`, else the
    /// regional endpoint of `region`. The global endpoint is refused unless `allowGlobalEndpoint` is set.
    /// `setName` only makes the messages point at the right config entry.
    public static func resolve(
        setName: String, region: String, endpoint: String?, allowGlobalEndpoint: Bool,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Result<STSEndpoint, STSEndpointError> {
        let place = "credentials.\(setName)"
        if let problem = regionProblem(region, place: place) { return .failure(STSEndpointError(message: problem)) }

        let configured: (text: String, origin: String)?
        if let endpoint, !endpoint.isEmpty {
            configured = (endpoint, "\(place).endpoint")
        } else if let fromEnvironment = environment["AWS_ENDPOINT_URL_STS"], !fromEnvironment.isEmpty {
            configured = (fromEnvironment, "AWS_ENDPOINT_URL_STS")
        } else {
            configured = nil
        }
        guard let configured else { return .success(regional(region: region)) }

        guard let url = URL(string: configured.text), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty
        else {
            return .failure(STSEndpointError(message:
                "\(configured.origin) is \"\(configured.text)\", which is not an http(s) URL; give a URL such as https://sts.\(region).amazonaws.com."))
        }
        if (url.path != "" && url.path != "/") || url.query != nil {
            return .failure(STSEndpointError(message:
                "\(configured.origin) is \"\(configured.text)\", but an STS endpoint is only a scheme, host and port; remove the path and query."))
        }
        if scheme == "http" && !isLoopback(host) {
            return .failure(STSEndpointError(message:
                "\(configured.origin) is \"\(configured.text)\": plain http would send the source session token in clear to a non-loopback host; use https."))
        }
        let bracketedHost = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        let authority = url.port.map { "\(bracketedHost):\($0)" } ?? bracketedHost
        guard let root = URL(string: "\(scheme)://\(authority)") else {
            return .failure(STSEndpointError(message:
                "\(configured.origin) is \"\(configured.text)\", whose host cannot be used in a URL; give a URL such as https://sts.\(region).amazonaws.com."))
        }
        if host.lowercased() == globalHost {
            guard allowGlobalEndpoint else {
                return .failure(STSEndpointError(message: globalRefusal(place: place, origin: configured.origin, region: region)))
            }
            return .success(STSEndpoint(
                url: root, signingRegion: "us-east-1", isGlobal: true,
                warnings: [globalWarning(setName: setName, region: region)]))
        }
        return .success(STSEndpoint(url: root, signingRegion: region, isGlobal: false, warnings: []))
    }

    /// The message `credd config check` shows for a bad region or endpoint, or nil when they are fine.
    public static func validationMessage(
        setName: String, region: String?, endpoint: String?, allowGlobalEndpoint: Bool,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String? {
        guard let region, !region.isEmpty else {
            return "credentials.\(setName) (source assume-role) has no region; set region (e.g. region: eu-west-1): credd always calls the regional STS endpoint https://sts.{region}.amazonaws.com."
        }
        switch resolve(setName: setName, region: region, endpoint: endpoint, allowGlobalEndpoint: allowGlobalEndpoint, environment: environment) {
        case .success: return nil
        case .failure(let error): return error.message
        }
    }

    static func regionProblem(_ region: String, place: String) -> String? {
        if region == "aws-global" {
            return "\(place).region is \"aws-global\", which names the global STS endpoint; give a real region such as us-east-1 (credd uses the regional endpoint)."
        }
        let valid = !region.isEmpty && region.count <= 32
            && region.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
            && region.contains("-") && !region.hasPrefix("-") && !region.hasSuffix("-")
        return valid ? nil : "\(place).region is \"\(region)\", which is not an AWS region name; give one such as eu-west-1."
    }

    static func isLoopback(_ host: String) -> Bool {
        let h = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return h == "localhost" || h == "::1" || h.hasPrefix("127.")
    }

    static func globalRefusal(place: String, origin: String, region: String) -> String {
        "\(origin) points at the global STS endpoint https://\(globalHost), which issues version 1 session tokens that fail with AuthFailure in opt-in regions (e.g. me-south-1); remove it to use the regional endpoint https://sts.\(region).amazonaws.com, or set \(place).allow_global_endpoint: true if you really need the global one."
    }

    static func globalWarning(setName: String, region: String) -> String {
        "Credential set \(setName) uses the global STS endpoint https://\(globalHost) as configured: its session tokens are version 1 and are valid only in regions enabled by default; in opt-in regions (e.g. me-south-1, af-south-1) AWS answers AuthFailure \"AWS was not able to validate the provided access credentials\". The regional endpoint https://sts.\(region).amazonaws.com issues version 2 tokens that work everywhere."
    }
}

/// Why an STS endpoint setting cannot be used; `message` is the full sentence for the config check.
public struct STSEndpointError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
