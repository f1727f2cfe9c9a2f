package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/client"
)

// clientTimeout bounds every read and write of the demo's connections, so
// that a server that stops answering fails the demo instead of hanging it.
const clientTimeout = 30 * time.Second

// dialer opens the demo's connections to the server, with its protocol and
// transport, and counts what they all send and receive.
type dialer struct {
	addr  string
	stack stack
	trips atomic.Int64 // round trips
	bytes byteCount
}

// newDialer returns a dialer to the server at addr that speaks protocol and
// transport.
func newDialer(addr, protocol, transport string) (*dialer, error) {
	st, err := newStack(protocol, transport, clientTimeout)
	if err != nil {
		return nil, err
	}
	return &dialer{addr: addr, stack: st}, nil
}

// conn is an open client connection.
type conn struct {
	proto thrift.TProtocol
	tc    thrift.TClient // a TStandardClient over proto that counts round trips
}

// open opens a connection.
func (d *dialer) open(ctx context.Context) (*conn, error) {
	var trans thrift.TTransport
	var err error
	if d.stack.transport == nil {
		trans, err = d.openHTTP()
	} else {
		trans, err = d.openSocket(ctx)
	}
	if err != nil {
		return nil, err
	}
	proto := d.stack.protocol.GetProtocol(trans)
	tc := countingClient{TClient: thrift.NewTStandardClient(proto, proto), trips: &d.trips}
	return &conn{proto: proto, tc: tc}, nil
}

// client opens a connection and returns a batch Client with opts on it,
// which owns it.
func (d *dialer) client(ctx context.Context, opts ...client.Option) (*client.Client, error) {
	c, err := d.open(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(c.proto, append(opts, client.WithTClient(c.tc))...)
	if err != nil {
		return nil, errors.Join(err, c.proto.Transport().Close())
	}
	return cl, nil
}

// openSocket dials a TCP connection and wraps it in the transport.
func (d *dialer) openSocket(ctx context.Context) (thrift.TTransport, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	sock := thrift.NewTSocketFromConnConf(&countingConn{Conn: nc, count: &d.bytes}, d.stack.conf)
	trans, err := d.stack.transport.GetTransport(sock)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("transport over %s: %w", d.addr, err), nc.Close())
	}
	return trans, nil
}

// openHTTP returns a Thrift HTTP client with an HTTP transport of its own,
// whose connections count their bytes. Responses are not gzipped, so that
// the bytes counted are those of thriftbatch's codecs alone.
func (d *dialer) openHTTP() (thrift.TTransport, error) {
	var nd net.Dialer
	ht := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: nc, count: &d.bytes}, nil
		},
		DisableCompression: true,
	}
	trans, err := thrift.NewTHttpClientWithOptions("http://"+d.addr+"/", thrift.THttpClientOptions{
		Client: &http.Client{Transport: ht, Timeout: clientTimeout},
	})
	if err != nil {
		return nil, err
	}
	return httpTransport{TTransport: trans, idle: ht}, nil
}

// httpTransport is a Thrift HTTP client whose Close also closes its idle
// HTTP connections, which THttpClient leaves open.
type httpTransport struct {
	thrift.TTransport
	idle *http.Transport
}

func (t httpTransport) Close() error {
	err := t.TTransport.Close()
	t.idle.CloseIdleConnections()
	return err
}

// byteCount counts the bytes connections read and write.
type byteCount struct {
	read, written atomic.Int64
}

// countingConn is a net.Conn that adds what it reads and writes to count.
type countingConn struct {
	net.Conn
	count *byteCount
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.count.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.count.written.Add(int64(n))
	return n, err
}

// countingClient is a thrift.TClient that counts the calls it sends, each
// one round trip.
type countingClient struct {
	thrift.TClient
	trips *atomic.Int64
}

var _ thrift.TClient = countingClient{}

func (c countingClient) Call(ctx context.Context, method string, args, result thrift.TStruct) (thrift.ResponseMeta, error) {
	c.trips.Add(1)
	return c.TClient.Call(ctx, method, args, result)
}
