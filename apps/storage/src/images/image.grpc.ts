import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { storageV1 } from '@flotilla/contracts';
import { operationToProto, ServiceIdentity } from '@flotilla/platform';
import { imageToProto } from '../mappers';
import { ImageService } from './image.service';

/** The gRPC edge of the image catalogue: caller identity in, catalogue calls, contract messages out. */
@Controller()
export class ImageGrpc implements storageV1.ImageServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(ImageService) private readonly images: ImageService,
  ) {}

  @GrpcMethod('ImageService', 'ListImages')
  async listImages(req: storageV1.ListImagesRequest, md: Metadata): Promise<storageV1.ListImagesResponse> {
    const caller = this.identity.caller(md);
    const { images, nextPageToken } = await this.images.list(caller, req.page);
    return { images: images.map((i) => imageToProto(i, caller)), nextPageToken };
  }

  @GrpcMethod('ImageService', 'GetImage')
  async getImage(req: storageV1.GetImageRequest, md: Metadata): Promise<storageV1.GetImageResponse> {
    const caller = this.identity.caller(md);
    return { image: imageToProto(await this.images.get(caller, req.id), caller) };
  }

  @GrpcMethod('ImageService', 'RegisterImage')
  async registerImage(
    req: storageV1.RegisterImageRequest,
    md: Metadata,
  ): Promise<storageV1.RegisterImageResponse> {
    const caller = this.identity.caller(md);
    const { image, operation } = await this.images.register(caller, req);
    return { image: imageToProto(image, caller), operation: operationToProto(operation) };
  }

  @GrpcMethod('ImageService', 'DeregisterImage')
  async deregisterImage(
    req: storageV1.DeregisterImageRequest,
    md: Metadata,
  ): Promise<storageV1.DeregisterImageResponse> {
    await this.images.deregister(this.identity.caller(md), req.id, req.etag);
    return {};
  }
}
