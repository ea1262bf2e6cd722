// `credd status --watch`: the status table redrawn every second with live countdowns, until Ctrl-C.
import CreddCore
import CreddServer
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum StatusWatch {
    /// Redraws forever (the process ends on SIGINT). On a terminal the screen is cleared for each frame;
    /// otherwise frames follow each other, separated by a blank line. With `json`, one compact status
    /// document per line. An unreachable credd is shown, not fatal: the next frame tries again.
    static func run(socket: String, json: Bool, interval: Duration = .seconds(1)) async throws {
        let terminal = isatty(STDOUT_FILENO) == 1
        while true {
            var frame: String
            switch await Self.frame(socket: socket, json: json, now: Date()) {
            case .success(let text): frame = text
            case .failure(let problem):
                frame = "credd: \(problem.message)"
                if json {  // keep stdout one JSON document per line
                    FileHandle.standardError.write(Data((frame + "\n").utf8))
                    try await Task.sleep(for: interval)
                    continue
                }
            }
            if json {
                print(frame)
            } else if terminal {
                print("\u{1B}[H\u{1B}[2J" + "credd status, every second (Ctrl-C stops): \(RFC3339.format(Date()))\n\n" + frame)
            } else {
                print(frame + "\n")
            }
            fflush(nil)  // print() buffers when stdout is a pipe
            try await Task.sleep(for: interval)
        }
    }

    struct Problem: Error { var message: String }

    static func frame(socket: String, json: Bool, now: Date) async -> Result<String, Problem> {
        // Say at once why credd cannot be reached rather than wait for the HTTP client's connect retries.
        switch DoctorProbe.connect(unixPath: socket) {
        case .connected: break
        case .noSuchSocket: return .failure(Problem(message: "cannot reach credd: no socket at \(socket); is it running?"))
        case .refused: return .failure(Problem(message: "cannot reach credd: nothing accepts on \(socket); is it running?"))
        case .permissionDenied: return .failure(Problem(message: "cannot reach credd: permission denied on \(socket)."))
        case .timedOut, .failed: break  // let the request below report it
        }
        do {
            let (status, body) = try await LocalClient.get(socket: socket, path: "/v1/status", timeout: .seconds(2))
            guard status == 200, let doc = try? StatusDocument.decoder().decode(StatusDocument.self, from: Data(body)) else {
                return .failure(Problem(message: LocalClient.errorMessage(body)))
            }
            if json {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                return .success(String(decoding: (try? encoder.encode(doc)) ?? Data(), as: UTF8.self))
            }
            return .success(StatusTable.render(doc, now: now))
        } catch {
            return .failure(Problem(message: "\(error)"))
        }
    }
}
