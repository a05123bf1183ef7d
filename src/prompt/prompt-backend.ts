/**
 * The contract every prompt backend (PolKit, Windows Hello, LocalAuthentication, the scripted
 * backend for tests) implements.
 *
 * A refusal is a result, not an error: `prompt()` resolves with an outcome, and rejects only
 * when something broke — which the authorizer then treats as a denial.
 *
 * @module
 */

/** The account the person is asked about. */
export interface AccountRef {
  /** Stable id of the account inside the app. */
  readonly id: string;
  /** The name the person knows it by ("Work", "Wendy Appleseed's Family"). */
  readonly displayName: string;
}

/**
 * The process being authorized, described from data the server verified through the kernel
 * (never from the client's words).
 */
export interface ProcessDescription {
  /** What the person sees hosting the session: "GNOME Terminal", "tmux", "SSH session", or the executable's name. */
  readonly host: string;
  /** The client program's name, from the kernel (comm or executable base name). */
  readonly program?: string;
  /** The client's process id. */
  readonly pid?: number;
  /** Absolute path of the client's executable, where readable. */
  readonly executable?: string;
  /**
   * The client's command line as the kernel reported it at connect, bounded in length. The
   * process can rewrite its own argv after exec, so this is detail to show next to the
   * executable (which it cannot change), never instead of it.
   */
  readonly commandLine?: readonly string[];
}

/** What the client said about itself. Shown to the person labelled as the client's claim, or not at all. */
export interface ClientClaims {
  /** The name the client gave in its hello. */
  readonly name?: string;
  /** The version the client gave in its hello. */
  readonly version?: string;
  /** A free-text reason the client gave for this request. */
  readonly reason?: string;
}

/** Everything a backend needs to ask the person. */
export interface PromptRequest {
  readonly account: AccountRef;
  /** Verified description of the requesting process. */
  readonly process: ProcessDescription;
  /** Unverified claims of the client, to be labelled as such if shown. */
  readonly claims: ClientClaims;
  /** The session credential's id, for backends that log or correlate. Not secret. */
  readonly sessionId: string;
  /** The peer's process id, start time and uid, for backends that check the process itself (polkit). */
  readonly subject?: { readonly pid: number; readonly startTime?: string; readonly uid?: number };
  /** True when the app is locked and a successful prompt will unlock it. */
  readonly unlocks: boolean;
}

/** How a prompt ended. */
export type PromptOutcome =
  /** The person confirmed. */
  | { readonly result: 'granted' }
  /** The person refused, or failed the challenge. */
  | { readonly result: 'denied'; readonly detail?: string }
  /** The prompt was dismissed or cancelled (including through the AbortSignal). */
  | { readonly result: 'cancelled'; readonly detail?: string }
  /** The backend cannot ask anyone right now (no agent, no biometric device, …). */
  | { readonly result: 'unavailable'; readonly detail?: string };

/** Options for {@link PromptBackend.prompt}. */
export interface PromptOptions {
  /** Fires when every requester has gone; the backend should take its prompt down. */
  readonly signal: AbortSignal;
}

/** Asks the person, through the operating system's own prompt, whether to allow access. */
export interface PromptBackend {
  /** Short stable id: `polkit`, `windows-hello`, `local-authentication`, `scripted`. */
  readonly id: string;
  /** Whether this backend can prompt on this machine now. Never throws; `false` on doubt. */
  isAvailable(options?: { signal?: AbortSignal }): Promise<boolean>;
  /** Asks the person. Resolves with the outcome; rejects only when the backend broke. */
  prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome>;
}
