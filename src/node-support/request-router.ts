// Several server-role users (proxies, resources) on one CoAP endpoint: one socket answers for all of them, as a
// CoAP server is one endpoint with many resources (RFC 7252 §5.7.2). A core class that serves requests takes a
// CoapEndpoint and sets its request handler; the router gives each user a view of the endpoint whose
// setRequestHandler adds (or with undefined removes) that user's route, and dispatches each request to the first
// route that claims it. A single route takes everything, as if it had the endpoint to itself.

import { CODES } from '../coap/codes';
import { CoapEndpoint, IncomingRequest, RequestHandler, ResponseContext } from '../messaging/endpoint';

/** Which requests a user serves; undefined = anything nobody else claims. */
export type RouteClaim = (req: IncomingRequest) => boolean;

interface Route {
  owner: object;
  claims?: RouteClaim;
  handler: RequestHandler;
}

export class RequestRouter {
  private routes: Route[] = [];

  constructor(private readonly endpoint: CoapEndpoint) {
    endpoint.setRequestHandler((req, ctx) => this.dispatch(req, ctx));
  }

  /** The endpoint as `owner` sees it: everything is the endpoint's own, except setRequestHandler. */
  viewFor(owner: object, claims?: RouteClaim): CoapEndpoint {
    const router = this;
    return new Proxy(this.endpoint, {
      get(target, prop) {
        if (prop === 'setRequestHandler') return (h: RequestHandler | undefined) => router.set(owner, claims, h);
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }

  set(owner: object, claims: RouteClaim | undefined, handler: RequestHandler | undefined): void {
    this.routes = this.routes.filter((r) => r.owner !== owner);
    if (handler) this.routes.push({ owner, claims, handler });
  }

  remove(owner: object): void {
    this.set(owner, undefined, undefined);
  }

  get size(): number {
    return this.routes.length;
  }

  private dispatch(req: IncomingRequest, ctx: ResponseContext): void {
    const route =
      this.routes.length === 1
        ? this.routes[0]
        : this.routes.find((r) => r.claims?.(req)) ?? this.routes.find((r) => !r.claims);
    if (route) return route.handler(req, ctx);
    // Nobody serves it: 4.04 to a unicast request; silence to a group request (RFC 10020 §3.1.2).
    if (req.multicast) ctx.ignore();
    else ctx.respond({ code: CODES.NOT_FOUND });
  }
}
