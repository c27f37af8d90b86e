// Package bus is ward's message bus: NATS, embedded in the authority for a
// single node or external for a cluster. It carries change notifications
// between replicas (the store stays the source of truth) over mutual TLS.
//
//	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{TLS: serverTLS, ClientCAs: roots})
//	defer srv.Shutdown()
//	conn, err := bus.Connect(ctx, srv.ClientURL(), clientTLS, "ward-authority")
//	defer conn.Close()
//	unsubscribe, err := conn.Subscribe(bus.SubjectEvents, func(subject string, data []byte) { ... })
//	err = conn.Publish(ctx, bus.SubjectEvents, []byte(`{"seq":42,"kind":"svid.revoked"}`))
package bus
