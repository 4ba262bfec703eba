//! What the webhook worker counts, exported on the worker's admin listener (`/metrics`).

gatehouse_core::counters! {
    /// The webhook worker's counters.
    pub struct WebhookStats {
        /// Requests sent to the backend.
        requests => "gatehouse_webhook_requests_total", "batches POSTed to the backend";
        /// Events carried by those requests (events / requests = the mean batch size).
        events_sent => "gatehouse_webhook_events_sent_total", "events carried by requests to the backend (retries included)";
        /// Requests that failed (unreachable, timeout, 408/429/5xx, oversize or invalid response).
        request_failures => "gatehouse_webhook_request_failures_total", "requests that failed and whose events are retried";
        /// Batches the backend refused with a 4xx.
        batches_refused => "gatehouse_webhook_batches_refused_total", "batches the backend refused with a 4xx (events acknowledged without commands)";
        /// Event retries inside a handler.
        retries => "gatehouse_webhook_event_retries_total", "events sent again after a failed request";
        /// Events given back to their gateway after the handler's retries.
        given_back => "gatehouse_webhook_events_given_back_total", "events given back to their gateway after the retries failed (delivered again later)";
        /// Clients closed with 1013 because the backend stayed unreachable past the give-up time.
        clients_given_up => "gatehouse_webhook_clients_given_up_total", "clients closed with 1013 because the backend stayed down past the give-up time";
        /// Events acknowledged without reaching the backend.
        events_dropped => "gatehouse_webhook_events_dropped_total", "events of given-up clients, and events larger than a batch, acknowledged without delivery";
        /// Results refused by validation.
        invalid_results => "gatehouse_webhook_invalid_results_total", "event results refused by validation (none of their commands ran)";
        /// Commands executed.
        commands => "gatehouse_webhook_commands_total", "commands from the backend executed";
        /// Commands that failed with a non-transient error.
        command_failures => "gatehouse_webhook_command_failures_total", "commands that failed (logged with their error code)";
        /// Handshakes the backend rejected.
        handshakes_rejected => "gatehouse_webhook_handshakes_rejected_total", "handshakes the backend rejected";
        /// Handshakes refused with 503 because the backend did not answer in time.
        handshakes_unavailable => "gatehouse_webhook_handshakes_unavailable_total", "handshakes refused with 503 because the backend did not answer in time";
    }
}
