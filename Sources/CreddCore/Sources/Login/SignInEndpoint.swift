// Where the Sign-In token service lives: the service's endpoint rules per partition, and the overrides.
import Foundation

/// The Sign-In endpoint for a region, as botocore's `signin` endpoint rule set resolves it
/// (botocore/data/signin/2023-01-01/endpoint-rule-set-1.json with partitions.json, FIPS and dual-stack off):
///
/// | partition | endpoint |
/// |---|---|
/// | aws | `https://{region}.signin.aws.amazon.com` |
/// | aws-cn | `https://{region}.signin.amazonaws.cn` |
/// | aws-us-gov | `https://{region}.signin.amazonaws-us-gov.com` |
/// | any other (iso, iso-b, iso-e, iso-f, eusc) | `https://signin.{region}.{dnsSuffix}` |
///
/// A region that matches no partition falls into `aws`, as botocore's `aws.partition` does.
public enum SignInEndpoint {
    /// The environment variable botocore reads for this service (`AWS_ENDPOINT_URL_` + service id).
    public static let environmentVariable = "AWS_ENDPOINT_URL_SIGNIN"
    /// The token operation's path (`CreateOAuth2Token`, `POST /v1/token`).
    public static let tokenPath = "/v1/token"

    /// One partition: its explicit region names, its region pattern (as prefix + `-word-digits`) and DNS suffix.
    struct Partition {
        let name: String
        let globalRegion: String
        let regionPrefixes: [String]
        let dnsSuffix: String
    }

    // From botocore/data/partitions.json (regionRegex, dnsSuffix); `aws` is last because it is the default.
    static let partitions: [Partition] = [
        Partition(name: "aws-cn", globalRegion: "aws-cn-global", regionPrefixes: ["cn"], dnsSuffix: "amazonaws.com.cn"),
        Partition(name: "aws-eusc", globalRegion: "", regionPrefixes: ["eusc-de"], dnsSuffix: "amazonaws.eu"),
        Partition(name: "aws-iso", globalRegion: "aws-iso-global", regionPrefixes: ["us-iso"], dnsSuffix: "c2s.ic.gov"),
        Partition(name: "aws-iso-b", globalRegion: "aws-iso-b-global", regionPrefixes: ["us-isob"], dnsSuffix: "sc2s.sgov.gov"),
        Partition(name: "aws-iso-e", globalRegion: "aws-iso-e-global", regionPrefixes: ["eu-isoe"], dnsSuffix: "cloud.adc-e.uk"),
        Partition(name: "aws-iso-f", globalRegion: "aws-iso-f-global", regionPrefixes: ["us-isof"], dnsSuffix: "csp.hci.ic.gov"),
        Partition(name: "aws-us-gov", globalRegion: "aws-us-gov-global", regionPrefixes: ["us-gov"], dnsSuffix: "amazonaws.com"),
        Partition(
            name: "aws", globalRegion: "aws-global",
            regionPrefixes: ["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"], dnsSuffix: "amazonaws.com"),
    ]

    /// The partition name for `region` (`aws`, `aws-cn`, `aws-us-gov`, …).
    public static func partition(of region: String) -> String {
        partitionRecord(of: region).name
    }

    static func partitionRecord(of region: String) -> Partition {
        if let explicit = partitions.first(where: { $0.globalRegion == region }) { return explicit }
        for partition in partitions where partition.regionPrefixes.contains(where: { matches(region, prefix: $0) }) {
            return partition
        }
        return partitions.last!
    }

    /// `^{prefix}-\w+-\d+$`, the shape of every partition's regionRegex.
    static func matches(_ region: String, prefix: String) -> Bool {
        guard region.hasPrefix(prefix + "-") else { return false }
        let rest = region.dropFirst(prefix.count + 1).split(separator: "-", omittingEmptySubsequences: false)
        guard rest.count == 2 else { return false }
        let word = rest[0], number = rest[1]
        return !word.isEmpty && word.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            && !number.isEmpty && number.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// The base URL (no path) for `region` under the service's endpoint rules.
    public static func regional(region: String) throws(SourceError) -> String {
        guard !region.isEmpty,
            region.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }),
            region.first != "-", region.last != "-"
        else {
            throw SourceError(
                code: "LoginConfigInvalid",
                message: "The region \"\(region)\" is not a valid AWS region name, so the Sign-In endpoint cannot be "
                    + "derived from it: set `region` in the profile to a region such as us-east-1.",
                disposition: .needsAction)
        }
        let partition = partitionRecord(of: region)
        switch partition.name {
        case "aws": return "https://\(region).signin.aws.amazon.com"
        case "aws-cn": return "https://\(region).signin.amazonaws.cn"
        case "aws-us-gov": return "https://\(region).signin.amazonaws-us-gov.com"
        default: return "https://signin.\(region).\(partition.dnsSuffix)"
        }
    }

    /// The endpoint to use: `override` (credd's config) first, then `AWS_ENDPOINT_URL_SIGNIN`, then
    /// `AWS_ENDPOINT_URL` (both ignored when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true, as in
    /// botocore), else the regional endpoint. An override must be an `https://` URL, or `http://` to a
    /// loopback address (a refresh token never crosses a network in clear text).
    public static func resolve(
        region: String?, override: String?, environment: [String: String], profile: String
    ) throws(SourceError) -> String {
        let ignoreEnvironment = environment["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"]?.lowercased() == "true"
        let candidates: [(String, String?)] = [
            ("the credd config's endpoint", override),
            (environmentVariable, ignoreEnvironment ? nil : environment[environmentVariable]),
            ("AWS_ENDPOINT_URL", ignoreEnvironment ? nil : environment["AWS_ENDPOINT_URL"]),
        ]
        for (origin, value) in candidates {
            guard let value, !value.isEmpty else { continue }
            return try validatedOverride(value, origin: origin)
        }
        guard let region, !region.isEmpty else {
            throw SourceError(
                code: "LoginConfigInvalid",
                message: "Profile \(profile) names no region, so credd cannot tell which Sign-In endpoint refreshes its "
                    + "aws login session: add `region = …` to the profile (aws login writes it) or set AWS_REGION.",
                disposition: .needsAction)
        }
        return try regional(region: region)
    }

    /// The token URL (the DPoP proof's `htu`) for a base endpoint: base without trailing `/` + `/v1/token`.
    public static func tokenURL(base: String) -> String {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        return base + tokenPath
    }

    static func validatedOverride(_ value: String, origin: String) throws(SourceError) -> String {
        func invalid(_ why: String) -> SourceError {
            SourceError(
                code: "LoginConfigInvalid",
                message: "The Sign-In endpoint \"\(value)\" from \(origin) \(why).", disposition: .needsAction)
        }
        guard let components = URLComponents(string: value), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else { throw invalid("is not an absolute URL with a host") }
        guard components.query == nil, components.fragment == nil, components.user == nil, components.password == nil
        else { throw invalid("must not carry a query, fragment or user info") }
        switch scheme {
        case "https": break
        case "http":
            guard isLoopback(host) else {
                throw invalid("uses plain http to a host that is not loopback; use https so the refresh token stays secret")
            }
        default: throw invalid("must use https (or http to a loopback address)")
        }
        var trimmed = value
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h == "[::1]" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) }) else {
            return false
        }
        return parts[0] == "127" && parts.allSatisfy { (UInt16($0) ?? 256) < 256 }
    }
}
