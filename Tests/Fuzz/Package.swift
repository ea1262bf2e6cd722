// swift-tools-version:6.1
// libFuzzer targets for credd's readers (issue 7), a package of its own so the main build never sees them.
// Built only by Tests/Fuzz/run.sh: swift build --scratch-path ../../.build-fuzz -Xswiftc -sanitize=fuzzer,address ...
import PackageDescription

let package = Package(
    name: "credd-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "credd", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "credd-fuzz",
            dependencies: [
                .product(name: "CreddCore", package: "credd"),
                .product(name: "CreddServer", package: "credd"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/CreddFuzz",
            swiftSettings: [.swiftLanguageMode(.v5)]
        )
    ]
)
